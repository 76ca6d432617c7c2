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
	@echo "immunobench: 'make demo' will run 'immunobench run --defense mima --task relearn-style' on the"
	@echo "embedded tiny-sd; the runner and MIMA arrive with roadmap issue [3/7] and do not exist yet."
	@echo "What works today: the embedded world and its premise check (about 10 minutes on 2 cores):"
	@echo "    .venv/bin/immunobench world check --out /tmp/world-check"
	@exit 1

clean:
	rm -rf $(VENV) build dist *.egg-info
