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
# The board's TPM 2.0 (docs/qemu.md "The TPM"): swtpm (swtpm-tools: swtpm_setup) on the host; in
# the guest, which runs the host's / over 9p, tpm2-pkcs11 (libtpm2-pkcs11-1, the PKCS#11 module
# holding the card-vault keys), tpm2_ptool (libtpm2-pkcs11-tools, python3-tpm2-pkcs11-tools:
# token initialisation) over tpm2-tools, and the TSS's device TCTI (/dev/tpmrm0). The host-only
# TPM tests (tests/test_tpm_swtpm.py) reach swtpm through tpm2-abrmd, the TSS's resource manager
# in user space (libtss2-tcti-tabrmd0, libtss2-tcti-swtpm0): a TPM holds only three loaded
# objects, and tpm2_ptool and tpm2-pkcs11 need a resource manager as the guest's kernel gives.
TPM_PACKAGES := swtpm swtpm-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools python3-tpm2-pkcs11-tools \
  tpm2-tools libtss2-tcti-device0 libtss2-tcti-swtpm0 tpm2-abrmd libtss2-tcti-tabrmd0
TPM2_PKCS11_MODULE := /usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1
QEMU_PACKAGES := qemu-system-x86 cpio kmod e2fsprogs $(TPM_PACKAGES)
QEMU_TOOLS_PATH := $(PATH):/usr/sbin:/sbin

.PHONY: qemu-deps qemu-image qemu-test qemu-run torture

qemu-deps:
	@PATH="$(QEMU_TOOLS_PATH)"; command -v qemu-system-x86_64 >/dev/null && command -v cpio >/dev/null \
	  && command -v depmod >/dev/null && command -v debugfs >/dev/null && command -v swtpm >/dev/null \
	  && command -v tpm2_ptool >/dev/null && command -v tpm2-abrmd >/dev/null \
	  && [ -e $(TPM2_PKCS11_MODULE) ] && [ -e /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0 ] \
	  && [ -e /usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0 ] || { \
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
