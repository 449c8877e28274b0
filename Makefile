# voxgate: `make run` starts the gateway (local engine, demo agent); `make test` runs every check.
# Every install comes from uv.lock (exact versions and hashes of every runtime and test dependency), so each
# machine runs the program that was tested. `make upgrade` moves the lock forward as a deliberate, tested step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
export HF_HUB_OFFLINE := 1
# uv uses this machine's Python (never one it downloads) and installs into .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Installs compile every module to bytecode once, so no process (a test run, each of its workers, a
# gateway) compiles its imports again, even where PYTHONDONTWRITEBYTECODE keeps Python from caching them.
export UV_COMPILE_BYTECODE := 1

.PHONY: compile install install-test install-llama install-node-sdk run test unit check lint typecheck lock-check upgrade system-deps bench-deps bench bench-pipecat clean

# uv itself is the one thing installed before the lock: pinned and hash-checked, in a venv of its own.
$(UV): tools/uv-requirements.txt
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps -r tools/uv-requirements.txt
	touch $@

# The runtime as locked; --inexact keeps the test tools if `make test` installed them.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --inexact --extra compiled
	$(BIN)/python -m compileall -q src
	touch $@

# voxgate itself is installed editable, which uv does not compile: src/ and the tests' helpers are, here,
# and the unit tests as pytest rewrites their asserts (each xdist worker would otherwise rewrite them all;
# later runs keep that cache current themselves).
$(VENV)/.installed-test: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra test --extra compiled
	$(BIN)/python -m compileall -q src tests
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -p no:cacheprovider -p no:schemathesis --collect-only tests/unit >/dev/null
	touch $@ $(VENV)/.installed

# The media path's modules compiled with mypyc (src/voxgate/compiled.py): rebuilt when one of their sources
# changed, a no-op otherwise; without a C compiler they run from source.
compile: | $(VENV)/.installed
	$(BIN)/voxgate compile

install: $(VENV)/.installed compile

install-test: $(VENV)/.installed-test compile

run: install
	$(BIN)/voxgate serve

# Debian packages the tests drive for real: PostgreSQL (store), Chromium (WebRTC end to end), SIPp (SIP),
# stress-ng (a CPU hog beside the suite when checking that tests do not depend on the machine's load),
# Redis, Kamailio and HAProxy (several gateways as one: tests/integration/test_scale_out.py), a C++
# compiler and CMake to build llama.cpp (install-llama), and Node.js with npm (the openai Node SDK's tests).
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ldconfig -p | grep -q 'libopus\.so\.0' || missing="$$missing libopus0"; \
	command -v sipp >/dev/null || missing="$$missing sip-tester"; \
	command -v baresip >/dev/null || missing="$$missing baresip-core"; \
	command -v c++ >/dev/null || missing="$$missing g++"; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v kamailio >/dev/null || missing="$$missing kamailio"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: install-test
	$(BIN)/ruff check src tests bench examples

typecheck: install-test
	$(BIN)/mypy

# Fails when pyproject.toml and uv.lock disagree (uv's own check; the suite checks it too, offline).
lock-check: | $(UV)
	$(UV) lock --check --offline

# The unit layer (pure cores and in-process sessions: no servers, ports or models) runs on every core;
# integration and end-to-end tests share live gateways and loaded models, so they run in one process.
# Test runs cache bytecode even where the environment sets PYTHONDONTWRITEBYTECODE: otherwise every
# worker and every gateway they start compiles src/ again, and pytest rewrites every test module's asserts
# again (about 2 s of CPU per process). The unit layer leaves out schemathesis' pytest plugin (only the
# operators' API fuzz, an integration test, uses schemathesis): loading it costs each process 0.3 s.
UNIT_PYTEST := $(BIN)/pytest -q -p no:cacheprovider -p no:schemathesis -n auto --dist loadgroup tests/unit
test unit: export PYTHONDONTWRITEBYTECODE :=
test: install-test install-llama install-node-sdk system-deps lint typecheck
	$(UNIT_PYTEST)
	$(BIN)/pytest -q -p no:cacheprovider --ignore=tests/unit

unit: install-test
	$(UNIT_PYTEST)

# The real llama.cpp server the cascade engine is tested against (tests/integration/test_cascade_llama.py),
# locked apart from voxgate in tests/llama. llama-cpp-python is source only: the first install compiles it
# (~5 min on 2 cores); uv's cache keeps the built wheel, so a warm machine does not compile it again.
LLAMA_VENV := $(CURDIR)/.venv-llama
$(LLAMA_VENV)/.installed: tests/llama/pyproject.toml tests/llama/uv.lock | $(UV) system-deps
	cd tests/llama && UV_PROJECT_ENVIRONMENT=$(LLAMA_VENV) ../../$(UV) sync --locked
	touch $@

install-llama: $(LLAMA_VENV)/.installed

# The official openai Node SDK, the Realtime client a JavaScript server uses (tests/integration/test_node_sdk.py),
# locked in tests/node: npm ci installs exactly the lock and checks each package's integrity.
NODE_SDK := tests/node/node_modules/.installed
$(NODE_SDK): tests/node/package.json tests/node/package-lock.json | system-deps
	cd tests/node && npm ci --silent --no-audit --no-fund
	touch $@

install-node-sdk: $(NODE_SDK)

# Re-resolve every dependency to its newest release within pyproject's ranges, install exactly that and
# run every check against it. Commit uv.lock when it is green; fix what broke when it is not.
upgrade: | $(UV)
	$(UV) lock --upgrade
	cd bench/pipecat && ../../$(UV) lock --upgrade
	cd tests/llama && ../../$(UV) lock --upgrade
	$(UV) sync --locked --extra test --extra compiled
	touch $(VENV)/.installed-test $(VENV)/.installed
	$(MAKE) test

# The benchmarks' own Debian packages: espeak-ng speaks bench/barge_in.py's callers.
bench-deps:
	@command -v espeak-ng >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null; }

bench: install-test system-deps bench-deps
	$(BIN)/python bench/brain_accuracy.py
	$(BIN)/python bench/codec_cost.py
	$(BIN)/python bench/models_cost.py
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/webrtc_capacity.py
	$(BIN)/python bench/bridge_capacity.py --no-pipecat
	$(BIN)/python bench/sip_capacity.py
	$(BIN)/python bench/barge_in.py

# Pipecat pins its own numpy and websockets, so its side of the bridge benchmark gets its own virtualenv,
# installed from its own lock (bench/pipecat/uv.lock).
PIPECAT_VENV := $(CURDIR)/.venv-pipecat
bench-pipecat: install-test | $(UV)
	cd bench/pipecat && UV_PROJECT_ENVIRONMENT=$(PIPECAT_VENV) ../../$(UV) sync --locked
	$(BIN)/python bench/bridge_capacity.py --pipecat-python $(PIPECAT_VENV)/bin/python

# The dashboard's charting library, vendored from npm and committed (the gateway never fetches it at run
# time): `make vendor-charts` fetches the pinned release again (npm checks its integrity) and replaces the copy.
UPLOT_VERSION := 1.6.31
VENDOR := src/voxgate/web/static/vendor
.PHONY: vendor-charts
vendor-charts:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null && \
	  tar xzf uplot-$(UPLOT_VERSION).tgz && \
	  cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css $(CURDIR)/$(VENDOR)/ && \
	  cp package/LICENSE $(CURDIR)/$(VENDOR)/uPlot.LICENSE && rm -rf $$tmp && echo "uPlot $(UPLOT_VERSION) in $(VENDOR)"

clean:
	rm -rf src/voxgate/.compiled.json $$(find src -name "*.so") $(VENV) $(UV_HOME) .venv-pipecat .venv-llama tests/node/node_modules .mypy_cache .ruff_cache .pytest_cache voxgate.db acme.db
