# voxgate: `make run` starts the gateway (local engine, demo agent); `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install run test lint typecheck system-deps bench bench-pipecat clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/voxgate serve

# Debian packages the tests drive for real: PostgreSQL (store) and Chromium (WebRTC end to end).
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check src tests bench examples

typecheck: install
	$(BIN)/mypy

test: install system-deps lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/brain_accuracy.py
	$(BIN)/python bench/codec_cost.py
	$(BIN)/python bench/models_cost.py
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/webrtc_capacity.py
	$(BIN)/python bench/bridge_capacity.py --no-pipecat

# Pipecat pins its own numpy and websockets, so its side of the bridge benchmark gets its own virtualenv.
PIPECAT_VENV := /tmp/pipecat-venv
bench-pipecat: install
	[ -x $(PIPECAT_VENV)/bin/python ] || ($(PYTHON) -m venv $(PIPECAT_VENV) && \
	  $(PIPECAT_VENV)/bin/pip install -q "pipecat-ai[silero,websocket]==1.14.0" fastapi uvicorn uvloop)
	$(BIN)/python bench/bridge_capacity.py --pipecat-python $(PIPECAT_VENV)/bin/python

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache voxgate.db acme.db
