# Two commands on a fresh machine: `make test` and `make demo`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: test demo clean

$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q

# The main job on the embedded tiny-sd: UCE start model → MIMA → LoRA re-learning → judges, for
# the two groups the world check uses (all ten take ~25 min on 2 cores; drop --groups for them).
demo: $(INSTALLED)
	$(VENV)/bin/immunobench run --defense mima --task relearn-style --groups 2c-1 3c-4

clean:
	rm -rf $(VENV) build dist *.egg-info
