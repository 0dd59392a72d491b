# mk/qemu.mk: the qemu board (board/qemu): qemu-deps, qemu-image, qemu-test, qemu-run, torture.
#
# Include it from the top-level Makefile after PY and VENV_STAMP are defined and after
# mk/c_ext.mk (qemu-test needs its `build`). Without the include: make -f Makefile -f mk/qemu.mk ...
#   QEMU_IMAGE_DIR  where the kernel, initramfs and data disk are cached (default var/qemu)

PY ?= .venv/bin/python
VENV_STAMP ?=
QEMU_IMAGE_DIR ?= var/qemu
# qemu-system-x86: the emulator; cpio: packs the initramfs; kmod: depmod/modprobe work out the
# module load order; e2fsprogs: mkfs.ext4 -d provisions the data disk, debugfs reads it back.
QEMU_PACKAGES := qemu-system-x86 cpio kmod e2fsprogs
QEMU_TOOLS_PATH := $(PATH):/usr/sbin:/sbin

.PHONY: qemu-deps qemu-image qemu-test qemu-run torture

qemu-deps:
	@PATH="$(QEMU_TOOLS_PATH)"; command -v qemu-system-x86_64 >/dev/null && command -v cpio >/dev/null \
	  && command -v depmod >/dev/null && command -v debugfs >/dev/null || { \
	  echo "$(QEMU_PACKAGES) missing: installing them with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $(QEMU_PACKAGES); }

# apt-get download needs the package lists; a machine that never ran apt-get update gets them here.
qemu-image: $(VENV_STAMP) qemu-deps
	@PATH="$(QEMU_TOOLS_PATH)" $(PY) -m board.qemu.image build --dir $(QEMU_IMAGE_DIR) || { \
	  echo "retrying after apt-get update"; SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && PATH="$(QEMU_TOOLS_PATH)" $(PY) -m board.qemu.image build --dir $(QEMU_IMAGE_DIR); }

qemu-test: qemu-image build
	QEMU_TESTS=1 QEMU_IMAGE_DIR=$(QEMU_IMAGE_DIR) PATH="$(QEMU_TOOLS_PATH)" $(PY) -m pytest tests/qemu -q -s

# The firmware in a QEMU guest with `make run`'s console (board/qemu/run.py). Its data disk and the
# simulator's ledger stay in var/qemu-run between runs; RUN_ARGS="--fresh" starts over,
# RUN_ARGS="--ecr-port 8583" relays that port on 127.0.0.1 to the guest's ECR line.
qemu-run: qemu-image build
	QEMU_IMAGE_DIR=$(QEMU_IMAGE_DIR) PATH="$(QEMU_TOOLS_PATH)" $(PY) -m board.qemu.run $(RUN_ARGS)

# Power-cut torture: N cycles (default 200), SEED replays a schedule: make torture N=50 SEED=1234
N ?= 200
torture: qemu-image build
	PATH="$(QEMU_TOOLS_PATH)" QEMU_IMAGE_DIR=$(QEMU_IMAGE_DIR) $(PY) -m board.qemu.torture --cycles $(N) \
	  $(if $(SEED),--seed $(SEED)) --workdir var/torture
