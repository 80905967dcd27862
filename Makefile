# One command for the demo, one for the tests. Everything installs itself on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed

.PHONY: demo demo-ha test lint reply deps system-deps venv bench accuracy clean stop-demo

demo: deps  ## start the stack, trigger an incident, print the agent's WhatsApp diagnosis
	$(PY) -m stackctl.demo

demo-ha: deps  ## the demo on a highly available stack: PostgreSQL, 2 clustered Alertmanagers, 2 agent replicas
	$(PY) -m stackctl.demo_ha

test: deps lint  ## lint and type gate, then unit, config and end-to-end tests (real Prometheus, Alertmanager, PostgreSQL, Chromium)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

reply: $(STAMP)  ## reply as the on-call engineer: make reply MSG="create a jira task and assign it to Ravi"
	@test -n "$(MSG)" || { echo 'usage: make reply MSG="create a jira task and assign it to Ravi"'; exit 2; }
	$(PY) -m stackctl.reply "$(MSG)"

deps: venv system-deps

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

system-deps:
	./scripts/install_system_deps.sh

bench: venv  ## benchmarks (see bench/README.md)
	./scripts/install_system_deps.sh --bench
	$(PY) bench/run_all.py

accuracy: deps  ## diagnosis accuracy benchmark on the live demo stack
	$(PY) bench/accuracy.py

stop-demo:  ## stop a demo left running in another terminal (by the PID it recorded)
	@if [ -f run/latest/demo.pid ] && kill -0 $$(cat run/latest/demo.pid) 2>/dev/null; then \
		kill -TERM $$(cat run/latest/demo.pid) && echo "stopping demo $$(cat run/latest/demo.pid)"; \
	else echo "no demo running"; fi

clean:
	rm -rf run data logs .pytest_cache
