# The two commands of the README. Both set everything up first (idempotent, fast when warm).
VENV ?= $(or $(STREAMPROC_VENV),$(or $(STREAMPROC_CACHE),$(HOME)/.cache/streamproc)/venv)
EVENTS ?= 200

.PHONY: demo test setup lint

demo: setup  ## local Kafka + Redis, the worker, demo events, live results, a summary
	$(VENV)/bin/streamproc demo --events $(EVENTS)

test: setup  ## the whole test suite against a real Kafka broker and Redis server
	$(VENV)/bin/python -m pytest -q

setup:
	@bash deploy/local/setup.sh

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
