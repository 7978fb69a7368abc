# Everything a fresh machine needs, in two targets: `make demo` (the main job) and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
# The CPU build of torch first, so pip does not pull a multi-GB CUDA build; on a GPU machine pass
# TORCH_SPEC='torch' (or a CUDA index) instead.
TORCH_SPEC ?= torch==2.13.0
MODEL     ?= openai/clip-vit-base-patch32
DEMO_HOME ?= .viewfinder-demo
# One demo library per model (a library holds one model's vectors): MODEL=tiny and the real model
# never meet in the same library. The folder name is the model with everything but [A-Za-z0-9._-] as '-'.
DEMO_LIBRARY ?= $(DEMO_HOME)/library-$(shell printf '%s' '$(MODEL)' | sed 's|^/*||; s|/*$$||; s|[^A-Za-z0-9._-]|-|g')
QUERY     ?= a cat

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '$(TORCH_SPEC)'
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# MODEL=tiny builds a random-weight CLIP to try the mechanics offline (its rankings mean nothing).
demo: setup
	@if [ "$(MODEL)" = "tiny" ]; then $(PY) tests/tiny_model.py $(DEMO_HOME)/tiny-clip >/dev/null; fi
	@$(VENV)/bin/viewfinder index data --home $(DEMO_LIBRARY) \
		--model $(if $(filter tiny,$(MODEL)),$(DEMO_HOME)/tiny-clip,$(MODEL)) \
		|| { echo "make demo: offline or no such model? Pass a local checkpoint folder: make demo MODEL=/path/to/clip-vit-base-patch32 (or MODEL=tiny: random weights, to try the mechanics)." >&2; exit 1; }
	$(VENV)/bin/viewfinder info --home $(DEMO_LIBRARY)
	$(VENV)/bin/viewfinder search "$(QUERY)" -k 5 --home $(DEMO_LIBRARY)
	$(VENV)/bin/viewfinder similar data/photos/chelsea.png -k 5 --home $(DEMO_LIBRARY)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO_HOME) test-artifacts .pytest_cache
