"""Viewfinder's web UI, a Streamlit script: ``viewfinder ui --home DIR`` serves it.

Run by hand with ``streamlit run ui/app.py -- --home DIR``. The page itself is in ``ui/views.py``.
"""

import sys

from ui.launch import parse_home
from ui.views import main

main(parse_home(sys.argv[1:]))
