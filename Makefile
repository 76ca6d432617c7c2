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

demo: $(INSTALLED)
	@echo "immunobench: 'make demo' runs 'immunobench run --defense mima --task relearn-style' on the embedded"
	@echo "tiny-sd model, which arrives with roadmap issue [2/7]; the runner with [3/7]. Neither exists yet."
	@echo "What works today:"
	$(VENV)/bin/immunobench list tasks
	@exit 1

clean:
	rm -rf $(VENV) build dist *.egg-info
