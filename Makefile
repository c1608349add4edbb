# The verbs people expect. `make run` and `make test` are the README's two
# set-up commands: each installs what it needs (idempotently) and runs.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := demo/audit.log.gz
OUT    := demo/out
WEB    ?= 127.0.0.1:9784

.PHONY: run test lint bench demo-data generate clean deps-system deps-bench report-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# pip builds exporter._speedups (the decoder's fast path in C) when a C
# compiler and Python's headers are there, and installs without it when not.
# (setuptools prints an "Editable installation" notice as it does so: the
# built module lies beside its source in the checkout)
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py exporter/_speedups.c
	$(BIN)/pip install -q -e .
	@$(BIN)/python -c "import exporter._speedups" 2>/dev/null || \
	  echo "note: exporter._speedups was not built (no C compiler or Python headers?):" \
	    "the exporter runs its Python fast path, slower; the tests expect it built"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Prometheus, promtool and Alertmanager for the integration tests,
# jsonnetfmt for the monitoring mixin, node + npm for the LogQL grammar,
# zsh and fish for the completion tests, redis-server for shared state and
# chromium (headless) for the auditor's report, from Debian; gcc and
# Python's headers to build exporter._speedups, which the tests expect.
deps-system:
	@missing=""; \
	for pair in prometheus:prometheus promtool:prometheus \
	    prometheus-alertmanager:prometheus-alertmanager jsonnetfmt:jsonnet \
	    node:nodejs npm:npm zsh:zsh fish:fish \
	    redis-server:redis-server chromium:chromium gcc:gcc; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	$(PYTHON) -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    $$missing >/dev/null; \
	fi

# valgrind for bench/instructions.py (instructions an event: a figure that
# does not move with the machine's other work); only the benchmarks need it.
deps-bench:
	@command -v valgrind >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    valgrind >/dev/null; }

# Replay the bundled simulated audit log, then run the exporter tailing it.
run: $(VENV)/.installed
	$(BIN)/kube-audit-exporter replay --config.file demo/config.yaml $(DEMO)
	@mkdir -p $(OUT)
	@gzip -dc $(DEMO) > $(OUT)/audit.log
	@echo
	@echo "Now serving metrics for the demo log at http://$(WEB)/metrics (Ctrl-C stops)."
	@echo "Try: curl -s http://$(WEB)/metrics | grep kube_audit_auth_failures_total"
	$(BIN)/kube-audit-exporter run --config.file demo/config.yaml --web.listen-address $(WEB)

# Format and render the monitoring mixin into dashboards/out/ and the chart's
# files/ (tests/test_mixin.py fails when this would change a committed file).
generate: deps-system $(VENV)/.installed-test
	$(BIN)/python dashboards/generate.py
	helm/sync-files.sh
	$(BIN)/python helm/values_doc.py
	$(BIN)/python -m exporter.detect.shipped

# Grafana's LogQL grammar (npm, pinned by the committed package-lock.json)
# for tests/test_logql_grammar.py; npm ci writes the stamp file last. It runs
# in tests/logql rather than with --prefix, which would also move npm's
# global config (and the machine's CA file set there) to tests/logql/etc.
LOGQL := tests/logql/node_modules/.package-lock.json

$(LOGQL): tests/logql/package.json tests/logql/package-lock.json | deps-system
	cd tests/logql && npm ci --no-audit --no-fund
	touch $@

# Azurite, Microsoft's Azure Storage emulator (npm, pinned likewise), for the
# AKS tests; the tests start it on loopback.
AZURITE := tests/azurite/node_modules/.package-lock.json

$(AZURITE): tests/azurite/package.json tests/azurite/package-lock.json | deps-system
	cd tests/azurite && npm ci --no-audit --no-fund
	touch $@

test: deps-system $(VENV)/.installed-test $(LOGQL) $(AZURITE)
	$(BIN)/python -m pytest -q
	$(MAKE) lint

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(VENV)/.installed-bench: $(VENV)/.installed-test pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

# One run, its figures written in one place: bench/figures.json, rendered
# into bench/README.md's Figures and quoted in README.md's Performance.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --json bench/results.json
	$(BIN)/python bench/loki.py --json bench/results-loki.json
	$(BIN)/python bench/detect.py --json bench/results-detect.json
	$(BIN)/python bench/state.py --json bench/results-state.json
	$(BIN)/python bench/scale.py --json bench/results-scale.json
	$(BIN)/python bench/figures.py --run bench/results.json --loki bench/results-loki.json \
	  --detect bench/results-detect.json --scale bench/results-scale.json
	$(BIN)/python bench/report.py

# The auditor's report of the demo log, committed with a screenshot of each
# section (tests/test_report.py fails when the report would change).
report-demo: deps-system $(VENV)/.installed
	$(BIN)/kube-audit-exporter report --config.file demo/config.yaml $(DEMO) \
	  --title "Demo cluster: audit report" --output docs/report/demo.html
	$(BIN)/python -m exporter.report.screenshots docs/report/demo.html docs/report

demo-data: $(VENV)/.installed
	$(BIN)/kube-audit-exporter simulate --events 25000 --rate 25 --seed 20240501 \
	  --start 2024-05-01T08:00:00Z --output $(DEMO)

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .pytest_cache .ruff_cache tests/logql/node_modules tests/azurite/node_modules build
	rm -f exporter/_speedups.*.so
