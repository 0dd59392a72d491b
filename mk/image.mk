# mk/image.mk: the flashable arm64 image (board/image, docs/image.md): image-check-deps,
# image-deps, image, bundle, image-test.
#
# Include it from the top-level Makefile after PY and VENV_STAMP are defined.
#   IMAGE_DIR  where the image, its wheels and bundles are built (default var/image)

PY ?= .venv/bin/python
VENV_STAMP ?=
IMAGE_DIR ?= var/image
# What `make test` needs of the image (tests/test_image_*.py): squashfs-tools (the slots),
# dosfstools + mtools (the FAT partitions), e2fsprogs (data), fdisk (sfdisk reads the GPT back),
# u-boot-tools (mkimage, mkenvimage), systemd-repart (the disk: Debian's systemd has it), rauc
# (bundles; its `info` checks them) and libengine-pkcs11-openssl (rauc signs with a key in a
# PKCS#11 token through it), qemu-system-arm + u-boot-qemu (U-Boot for QEMU virt: the boot counter).
IMAGE_CHECK_PACKAGES := squashfs-tools dosfstools mtools e2fsprogs fdisk u-boot-tools systemd rauc \
  libengine-pkcs11-openssl qemu-system-arm u-boot-qemu
IMAGE_CHECK_TOOLS := mksquashfs mkfs.vfat mcopy mkfs.ext4 sfdisk mkimage mkenvimage systemd-repart rauc \
  qemu-system-aarch64
# What `make image` needs besides: mmdebstrap builds the root; qemu-user-static + binfmt-support
# run its arm64 programs.
IMAGE_BUILD_PACKAGES := mmdebstrap qemu-user-static binfmt-support
IMAGE_BUILD_TOOLS := mmdebstrap qemu-aarch64-static
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# $(call need,TOOLS,PACKAGES,EXTRA-TEST): apt-get install PACKAGES unless every tool is on PATH.
need = PATH="$(PATH):/usr/sbin:/sbin"; missing=; for tool in $(1); do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; done; $(3) \
	[ -z "$$missing" ] || { echo "missing:$$missing; installing $(2) with apt-get"; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends $(2); }

.PHONY: image-check-deps image-deps image bundle image-test

image-check-deps:
	@$(call need,$(IMAGE_CHECK_TOOLS),$(IMAGE_CHECK_PACKAGES),\
	  [ -f /usr/lib/u-boot/qemu_arm64/u-boot.bin ] || missing="$$missing u-boot.bin"; \
	  [ -n "$$(ls /usr/lib/*/engines-3/pkcs11.so 2>/dev/null)" ] || missing="$$missing pkcs11-engine";)

# The arm64 programs of the root run through binfmt_misc: Debian's qemu-user-static registers
# them when binfmt-support runs; a container may need the registration made here.
image-deps: image-check-deps
	@$(call need,$(IMAGE_BUILD_TOOLS),$(IMAGE_BUILD_PACKAGES),)
	@[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { \
	  [ -e /proc/sys/fs/binfmt_misc/register ] || $(SUDO) mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
	  $(SUDO) update-binfmts --enable qemu-aarch64 || true; }

# Root: mmdebstrap --mode=root and chroot. Prints the disk's SHA-256.
image: $(VENV_STAMP) image-deps
	$(SUDO) $(PY) -m board.image.build --dir $(IMAGE_DIR)

# BUNDLE_VERSION defaults to the firmware's version; RAUC_KEY/RAUC_CERT name a vendor's key
# (docs/image.md "Bundles and signing keys"); BUNDLE_ARGS adds options (e.g. --rootfs FILE --out FILE).
BUNDLE_ARGS ?=
bundle: image
	$(PY) -m board.image.bundle --image-dir $(IMAGE_DIR) --key-dir $(IMAGE_DIR)/keys \
	  $(if $(BUNDLE_VERSION),--version $(BUNDLE_VERSION)) $(BUNDLE_ARGS)

# The image under qemu-system-aarch64 (tests/image): boot, sale, update, fallback, power cuts,
# and two builds giving the same SHA-256: about 40 minutes on 2 cores (an image build is ~10).
image-test: image build
	IMAGE_TESTS=1 IMAGE_DIR=$(IMAGE_DIR) $(PY) -m pytest tests/image -p no:xdist -q -s
