# Marsad: `make run` (Airflow + DAGs on the embedded default), `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.8
UV := .tools/uv/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test test-fast bench lock clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools/uv uv==$(UV_VERSION)

# Exactly what uv.lock pins; re-synced when the lock, pyproject or the compiled loops' source
# (warehouse/_kernels.c, built in place by the editable install) change.
$(VENV)/.installed: pyproject.toml uv.lock warehouse/_kernels.c $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

run: install
	$(VENV)/bin/python -m marsad.airflow_env

# Two workers (pytest-xdist), a test file per worker at a time: the Airflow tests spend most of
# their time waiting on Airflow, so the suite takes about half as long on two cores. The 25
# slowest tests are listed at the end, so CI time is watched where it grows.
test: install
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --durations=25

# Skips the tests that start a real Airflow.
test-fast: install
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -m "not airflow"

# Benchmarks against same-run baselines; results with machine details go to bench/results/.
bench: install
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

lock: $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) .tools .airflow var
