# Every target sets itself up on a fresh clone: pipenv in .tools/, the locked packages in .venv/.
PYTHON ?= python3
PIPENV_VERSION := 2026.10.3
PIPENV := .tools/bin/pipenv
VENV := .venv
SYNCED := $(VENV)/.synced
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_VERBOSITY := -1
export PIPENV_NOSPIN := 1

.PHONY: serve test train notebook lock lint bench container-test fuzz loadtest clean

serve: $(SYNCED)
	$(VENV)/bin/gunicorn predict:app

# The container test runs only where an engine is named (CONTAINER_ENGINE=docker, or podman here).
test: $(SYNCED)
	sh scripts/install_browser.sh
	$(VENV)/bin/python -m pytest $(if $(CONTAINER_ENGINE),,-m "not container")

train: $(SYNCED)
	$(VENV)/bin/python train.py $(if $(CHURN_DATA),--data $(CHURN_DATA)) --report reports
	mkdir -p docs && cp reports/roc.png docs/roc.png

# Re-runs the notebook and saves it with its outputs (tests/test_notebook.py fails when they are stale).
notebook: $(SYNCED)
	CHURN_UPDATE_NOTEBOOK=1 $(VENV)/bin/python -m pytest tests/test_notebook.py

# Throughput of this service, the course's classic one and Flask's floor, under identical gunicorn flags.
bench: $(SYNCED)
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# Longer runs of what `make test` runs briefly: schemathesis with more examples; load and faults for 30 s each.
fuzz: $(SYNCED)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(VENV)/bin/python -m pytest tests/test_fuzz.py -p no:cacheprovider

loadtest: $(SYNCED)
	$(VENV)/bin/python -m loadtest.run $(if $(DURATION),--duration $(DURATION))

container-test: $(SYNCED)
	$(VENV)/bin/python scripts/container_test.py

lint: $(SYNCED)
	$(VENV)/bin/ruff check .

$(PIPENV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet pipenv==$(PIPENV_VERSION)

# Locks without this machine's pip configuration (its index would enter the Pipfile hash), and
# keeps no index in the lock: installs use the installer's own configuration.
lock: $(PIPENV)
	PIP_CONFIG_FILE=/dev/null $(PIPENV) lock
	$(PYTHON) -c 'import json; p = "Pipfile.lock"; d = json.load(open(p)); d["_meta"]["sources"] = []; \
	open(p, "w").write(json.dumps(d, indent=4, sort_keys=True) + "\n")'

$(SYNCED): Pipfile.lock | $(PIPENV)
	$(PIPENV) sync --dev
	touch $@

clean:
	rm -rf .tools $(VENV) .pytest_cache .ruff_cache
