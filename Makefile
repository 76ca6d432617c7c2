# Two commands on a fresh machine: `make test` and `make demo`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: test demo bench tables clean

$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

# pytest-xdist: one test process per core (TEST_WORKERS=0 runs them in this process); a file's tests
# stay in one process, so its module fixtures are built once
TEST_WORKERS ?= auto
test: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The main job on the embedded tiny-sd: UCE start model → MIMA → LoRA re-learning → judges, on all
# ten groups of the card (about 15 min on 2 cores with an empty store; seconds once stored).
demo: $(INSTALLED)
	$(VENV)/bin/immunobench run --defense mima --task relearn-style

# Speed and memory of the cell's stages; figures in benchmarks/results/bench_*.json (about 10 min).
bench: $(INSTALLED)
	$(VENV)/bin/python benchmarks/bench_cell.py
	$(VENV)/bin/python benchmarks/bench_attack_step.py
	$(VENV)/bin/python benchmarks/bench_mima.py

# The science tables: MIMA's tiny-sd preset and merge-data sweeps (selection seeds 7, 8), the
# evaluation-count spread, then both re-learning cards at seeds 0, 1, 2 (about 2 h on 2 cores).
tables: $(INSTALLED)
	$(VENV)/bin/python benchmarks/mima_tiny_sd.py
	$(VENV)/bin/python benchmarks/mima_regularization.py
	$(VENV)/bin/python benchmarks/eval_spread.py
	$(VENV)/bin/python benchmarks/relearn_three_seeds.py

clean:
	rm -rf $(VENV) build dist *.egg-info
