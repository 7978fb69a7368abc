"""Ctrl-C while the model loads is answered at once. The load (imports and weights: seconds, minutes for a
first download) runs while the decoder threads wait for the model; the run used to wait for the load to
finish before it could stop. A real index run in a subprocess, with a model factory that takes a minute.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import write_image

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from indexer.run import index_paths
    from indexer.writer import LibraryWriter

    def slow_model():
        print("loading", flush=True)
        time.sleep(60)  # as long as a slow import, a big checkpoint or a hub that does not answer
        raise AssertionError("not reached")

    with LibraryWriter.open(Path(sys.argv[1])) as writer:
        try:
            index_paths([Path(sys.argv[2])], writer, slow_model, model_id="slow", batch_size=4, workers=2)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """
)


def test_ctrl_c_while_the_model_loads_exits_at_once(tmp_path: Path) -> None:
    for i in range(6):
        write_image(tmp_path / "photos" / f"{i}.png", seed=i)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "library"), str(tmp_path / "photos")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "loading"
        time.sleep(0.5)  # the decoder threads are waiting for the model now
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=50)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out
    assert took < 20, f"Ctrl-C took {took:.1f}s: the run waited for the model load"  # it used to wait the full 60 s
