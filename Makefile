# The two commands of the README. Both set everything up first (idempotent, fast when warm).
VENV ?= $(or $(STREAMPROC_VENV),$(or $(STREAMPROC_CACHE),$(HOME)/.cache/streamproc)/venv)
EVENTS ?= 200

.PHONY: demo test setup setup-demo setup-test lint

demo: setup-demo  ## local Kafka + Redis, the worker, demo events, live results, a summary
	$(VENV)/bin/streamproc demo --events $(EVENTS)

test: setup-test  ## the whole test suite against a real Kafka broker and Redis server
	$(VENV)/bin/python -m pytest -q

setup-demo:  ## only what the demo needs (no test extras, no browser, no Go tools)
	@bash deploy/local/setup.sh demo

setup-test:  ## the demo's set plus test extras, Chromium, and the Go-built deployment validators
	@bash deploy/local/setup.sh test

setup: setup-test  ## everything (the test set-up)

lint:
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
