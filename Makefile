# Everything a fresh machine needs, in two targets: `make demo` (the main job) and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
# The CPU build of torch first, so pip does not pull a multi-GB CUDA build; on a GPU machine pass
# TORCH_SPEC='torch' (or a CUDA index) instead.
TORCH_SPEC ?= torch==2.13.0
MODEL     ?= openai/clip-vit-base-patch32
DEMO_HOME ?= .viewfinder-demo
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
	$(VENV)/bin/viewfinder index data --home $(DEMO_HOME)/library \
		--model $(if $(filter tiny,$(MODEL)),$(DEMO_HOME)/tiny-clip,$(MODEL))
	$(VENV)/bin/viewfinder info --home $(DEMO_HOME)/library
	$(VENV)/bin/viewfinder search "$(QUERY)" -k 5 --home $(DEMO_HOME)/library
	$(VENV)/bin/viewfinder similar data/photos/chelsea.png -k 5 --home $(DEMO_HOME)/library

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO_HOME) test-artifacts .pytest_cache
