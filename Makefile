# Every target sets itself up on a fresh clone: pipenv in .tools/, the locked packages in .venv/.
PYTHON ?= python3
PIPENV_VERSION := 2026.10.3
PIPENV := .tools/bin/pipenv
VENV := .venv
# One .venv at two levels, each with its marker: serving (the Pipfile's [packages], what the Docker image holds)
# and development, which adds [dev-packages] and needs serving's first, so that its marker implies serving's.
SERVE_SYNCED := $(VENV)/.synced-serve
SYNCED := $(VENV)/.synced
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_VERBOSITY := -1
export PIPENV_NOSPIN := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# matplotlib's font cache beside the environment whose fonts it lists: one in ~/.cache, left by a deleted environment
# of the same matplotlib version, can list fonts that are gone (the notebook's plots then warn and its test fails).
export MPLCONFIGDIR ?= $(CURDIR)/$(VENV)/matplotlib

.PHONY: serve test test-fast train notebook jupyter lock lint bench bench-batch container-test fuzz loadtest clean

# A development env stays one: serve then brings the whole of it up to date, never only its serving part.
serve: $(if $(wildcard $(SYNCED)),$(SYNCED),$(SERVE_SYNCED))
	$(VENV)/bin/gunicorn predict:app

# What the tests need beyond Python, as PROGRAM=Debian packages, installed by scripts/install_debian.sh when missing.
CHROMIUM := chromium=chromium,chromium-driver,fonts-dejavu-core
NGINX := nginx=nginx
JAVA := java=openjdk-17-jre-headless
# PostgreSQL's server for the prediction log's tests (they run initdb and pg_ctl themselves, not its service).
POSTGRES := pg_ctlcluster=postgresql
# Prometheus and promtool run the rules (monitoring/prometheus/); docker-compose and podman-compose read compose.yaml.
PROMETHEUS := prometheus=prometheus docker-compose=docker-compose podman-compose=podman-compose

# The container test runs only where an engine is named (CONTAINER_ENGINE=docker, or podman here).
# PYTEST_ARGS narrows the run: make test PYTEST_ARGS=tests/unit/test_data.py
test: $(SYNCED)
	sh scripts/install_debian.sh $(CHROMIUM) $(NGINX) $(JAVA) $(POSTGRES) $(PROMETHEUS)
	$(VENV)/bin/python -m pytest $(if $(CONTAINER_ENGINE),,-m "not container") $(PYTEST_ARGS)

# The quick edit-and-test loop: tests/unit (no server, browser, nginx, Spark or container: nothing beyond the venv),
# less the tests marked slow; under a minute, where `make test` takes many. The markers are listed in pyproject.toml.
test-fast: $(SYNCED)
	$(VENV)/bin/python -m pytest tests/unit -m "not slow"

# train.py finds the data in $CHURN_DATA, ../shared/data/ or data/, else downloads it to data/.
train: $(SYNCED)
	$(VENV)/bin/python train.py --report reports
	mkdir -p docs && cp reports/roc.png docs/roc.png

# Re-runs the notebook and saves it with its outputs (tests/integration/test_notebook.py fails when they are stale).
notebook: $(SYNCED)
	CHURN_UPDATE_NOTEBOOK=1 $(VENV)/bin/python -m pytest tests/integration/test_notebook.py

# JupyterLab on the notebooks folder, for this machine only (it runs code for whoever holds its token).
JUPYTER_PORT ?= 8888
jupyter: $(SYNCED)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(JUPYTER_PORT) \
		$(JUPYTER_ARGS)

# Throughput of this service, the course's classic one and Flask's floor, under identical gunicorn flags; then what the
# prediction log costs (bench/predictionlog.py: log off, SQLite, PostgreSQL), and what monitoring costs a batch in CPU
# time (bench/inprocess.py).
bench: $(SYNCED)
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	sh scripts/install_debian.sh $(POSTGRES)
	$(VENV)/bin/python -m bench.predictionlog $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.inprocess $(BENCH_ARGS)

# Batch scoring: score.py on a 1,000,000-row CSV against the naive pandas + scikit-learn way, and on Spark local[2]
# against a naive pandas UDF and an identity pass (the floor of Spark's Python workers).
bench-batch: $(SYNCED)
	sh scripts/install_debian.sh $(JAVA)
	$(VENV)/bin/python -m bench.batch $(BENCH_BATCH_ARGS)

# Longer runs of what `make test` runs briefly: schemathesis with more examples; load and faults for 30 s each.
fuzz: $(SYNCED)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(VENV)/bin/python -m pytest tests/integration/test_fuzz.py -p no:cacheprovider

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

$(VENV)/bin/python: | $(PIPENV)
	.tools/bin/virtualenv --quiet --python $(PYTHON) $(VENV)

# pip installs each level, not `pipenv sync`, which holds pip's output to the end (two silent minutes for the
# development level): pip names each package as it goes. It installs exactly what the lock pins (--no-deps),
# each file checked against the lock's hashes.
$(SERVE_SYNCED): Pipfile.lock | $(VENV)/bin/python
	@echo "make: installing what serving needs (Pipfile.lock's [packages], about 100 MB) into $(VENV)/"
	$(PIPENV) requirements --hash > $(VENV)/requirements-serve.txt
	$(VENV)/bin/pip install --require-hashes --no-deps -r $(VENV)/requirements-serve.txt
	touch $@

$(SYNCED): $(SERVE_SYNCED)
	@echo "make: adding training, batch scoring, the notebook and the tests ([dev-packages], about 1.8 GB)"
	$(PIPENV) requirements --dev-only --hash > $(VENV)/requirements-dev.txt
	$(VENV)/bin/pip install --require-hashes --no-deps -r $(VENV)/requirements-dev.txt
	touch $@

clean:
	rm -rf .tools $(VENV) .pytest_cache .ruff_cache
