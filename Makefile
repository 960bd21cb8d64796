# Two commands matter: `make run` (the whole local stack) and `make test`.
SHELL := /bin/bash
# uv when it is on PATH; otherwise the module that `make install` puts there with pip.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY_DIRS := libs services devstack tests bench

.PHONY: install run stop test lint format proto bench clean

install:  ## bootstrap uv with pip when missing, then sync every package and extra
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --all-extras --locked

run: install  ## start the whole local stack (DETACH=1 to return once it is ready)
	$(UV) run python -m scaidevstack stack up $(if $(DETACH),--detach,)

stop:  ## stop a stack started with DETACH=1
	$(UV) run python -m scaidevstack stack down

test: install  ## every test: unit and integration, against real services
	$(UV) run pytest

lint: install  ## ruff + mypy (strict on scaicommon)
	$(UV) run ruff check $(PY_DIRS)
	$(UV) run ruff format --check $(PY_DIRS)
	$(UV) run mypy libs/scaicommon/src services/scaiecho/src services/scaispeak/src devstack/src

format: install
	$(UV) run ruff check --fix $(PY_DIRS)
	$(UV) run ruff format $(PY_DIRS)

proto: install  ## regenerate the committed gRPC stubs from proto/
	$(UV) run python -m scaicommon._proto.generate

bench: install  ## benchmarks print tables and write bench/results/
	$(UV) run python bench/http_overhead.py
	$(UV) run python bench/node.py
	$(UV) run python bench/echo_batch.py
	$(UV) run python bench/speak_batch.py

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
