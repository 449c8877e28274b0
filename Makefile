# voxgate: `make run` starts the gateway (local engine, demo agent); `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install run test lint typecheck unit integration system-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/voxgate serve

# Debian packages the tests drive for real: PostgreSQL (store), espeak-ng and sox (spoken test audio).
SYSTEM_PACKAGES := postgresql espeak-ng sox
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v sox >/dev/null || missing="$$missing sox"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
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
	$(BIN)/python bench/turn_latency.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache voxgate.db acme.db
