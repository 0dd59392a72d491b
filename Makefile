# The two commands: `make run` and `make test`. Each does all set-up on a fresh
# Debian/Ubuntu machine with Python 3.11 (virtualenv, pinned dependencies, the C
# extension) and then runs. Nothing here depends on anything installed by hand.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
BOARD ?= sim
# Extra arguments for `make run`, e.g. RUN_ARGS="--headless" or "--var /tmp/x --base-port 6800".
RUN_ARGS ?=
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test test-deps lint bench clean kill-test
.DEFAULT_GOAL := test

# Debian's python3 lacks ensurepip until python3-venv is installed: install it
# only when creating the venv fails, and only where we may (root or sudo).
$(PY):
	$(PYTHON) -m venv $(VENV) || { \
	  echo "python3-venv missing: installing it with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv python3-dev && \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }

# The LCD and the printer emulator draw Chinese with GNU Unifont, a CJK bitmap
# font from Debian's fonts-unifont; evdev compiles against the kernel headers.
UNIFONT := /usr/share/fonts/opentype/unifont/unifont.otf

$(VENV_STAMP): $(PY) requirements.txt requirements-dev.txt
	@[ -f $(UNIFONT) ] || { echo "fonts-unifont missing: installing it with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y fonts-unifont; }
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

include mk/c_ext.mk
include mk/qemu.mk

run: $(VENV_STAMP) build
	$(PY) -m board.sim.devrun --board $(BOARD) $(RUN_ARGS)

# The console test runs `make run` in a real terminal multiplexer (Debian package tmux).
test-deps:
	@command -v tmux >/dev/null || { echo "tmux missing: installing it with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y tmux; }

# The qemu smoke (tests/qemu/test_qemu_smoke.py) runs here; the rest of tests/qemu in qemu-test.
test: $(VENV_STAMP) build fuzz-deps test-deps qemu-image
	$(PY) -m ruff check .
	QEMU_SMOKE=1 QEMU_IMAGE_DIR=$(QEMU_IMAGE_DIR) PATH="$(QEMU_TOOLS_PATH)" $(PY) -m pytest

# The long SIGKILL run (also part of `make test` with fewer transactions).
kill-test: $(VENV_STAMP) build
	KILL_TEST_TXNS=$${KILL_TEST_TXNS:-400} $(PY) -m pytest tests/test_kill.py -q

lint: $(VENV_STAMP)
	$(PY) -m ruff check .

bench: $(VENV_STAMP) build qemu-image
	PATH="$(QEMU_TOOLS_PATH)" $(PY) tests/bench/run_all.py

clean:
	rm -rf $(VENV) build var _posio*.so c_ext/_posio.c
