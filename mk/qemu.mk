# mk/qemu.mk: the qemu board (board/qemu): qemu-deps, qemu-image, qemu-test.
#
# Include it from the top-level Makefile after PY and VENV_STAMP are defined and after
# mk/c_ext.mk (qemu-test needs its `build`). Without the include: make -f Makefile -f mk/qemu.mk ...
#   QEMU_IMAGE_DIR  where the kernel, initramfs and data disk are cached (default var/qemu)

PY ?= .venv/bin/python
VENV_STAMP ?=
QEMU_IMAGE_DIR ?= var/qemu
# qemu-system-x86: the emulator; cpio: packs the initramfs; kmod: depmod/modprobe work out the
# module load order. dpkg-deb, apt-get and mkfs.ext4 (e2fsprogs) are on every Debian system.
QEMU_PACKAGES := qemu-system-x86 cpio kmod

.PHONY: qemu-deps qemu-image qemu-test

qemu-deps:
	@command -v qemu-system-x86_64 >/dev/null && command -v cpio >/dev/null && command -v depmod >/dev/null || { \
	  echo "$(QEMU_PACKAGES) missing: installing them with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $(QEMU_PACKAGES); }

qemu-image: $(VENV_STAMP) qemu-deps
	$(PY) -m board.qemu.image build --dir $(QEMU_IMAGE_DIR)

qemu-test: qemu-image build
	QEMU_TESTS=1 QEMU_IMAGE_DIR=$(QEMU_IMAGE_DIR) $(PY) -m pytest tests/qemu -q -s
