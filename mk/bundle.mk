# mk/bundle.mk: RAUC update bundles and their signing keys (board/image/bundle.py, signing.py):
# bundle-deps, keys, bundle.
#
# Include it from the top-level Makefile after PY and VENV_STAMP are defined; `make test` needs
# bundle-deps (tests/test_image_bundle.py runs rauc, mksquashfs, mkfs.vfat, mcopy). Variables:
#   IMAGE_DIR        where the image build leaves rootfs.squashfs and kernel.vfat (default var/image)
#   BUNDLE_VERSION   the bundle's version (default: the firmware's, pyproject.toml)
#   BUNDLE_ARGS      more options, e.g. "--rootfs other.squashfs --out var/image/broken.raucb"
#   RAUC_KEY RAUC_CERT RAUC_KEYRING [RAUC_INTERMEDIATE]   a vendor's key set instead of the
#                    development one (var/image/keys); RAUC_KEY may be a pkcs11: URI, with
#                    RAUC_PKCS11_MODULE and RAUC_PKCS11_PIN (docs/image.md, "Bundles and signing keys")

PY ?= .venv/bin/python
PYTHON ?= python3
VENV_STAMP ?=
IMAGE_DIR ?= var/image
BUNDLE_VERSION ?=
BUNDLE_ARGS ?=
# rauc: builds and checks bundles; squashfs-tools: rauc packs the payload with mksquashfs and
# extracts it with unsquashfs; dosfstools and mtools: the tests' stand-in kernel.vfat;
# libengine-pkcs11-openssl: OpenSSL's PKCS#11 engine, which rauc loads for a pkcs11: key.
BUNDLE_PACKAGES := rauc squashfs-tools dosfstools mtools libengine-pkcs11-openssl
PKCS11_ENGINE := /usr/lib/$(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('MULTIARCH'))")/engines-3/pkcs11.so
# A vendor's key set reaches the build through the environment, from make's command line too.
export RAUC_KEY RAUC_CERT RAUC_KEYRING RAUC_INTERMEDIATE RAUC_PKCS11_MODULE RAUC_PKCS11_PIN

.PHONY: bundle-deps keys bundle

bundle-deps:
	@PATH="$(PATH):/usr/sbin:/sbin"; command -v rauc >/dev/null && command -v mksquashfs >/dev/null \
	  && command -v unsquashfs >/dev/null && command -v mkfs.vfat >/dev/null && command -v mcopy >/dev/null \
	  && [ -e $(PKCS11_ENGINE) ] || { \
	  echo "$(BUNDLE_PACKAGES) missing: installing them with apt-get"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $(BUNDLE_PACKAGES); }

# The development key set (made once, then reused), or the vendor's named by RAUC_*: prints which.
keys: $(VENV_STAMP)
	$(PY) -m board.image.signing --key-dir $(IMAGE_DIR)/keys

# The image build must run first (it makes IMAGE_DIR's rootfs.squashfs and kernel.vfat): the
# top-level Makefile adds it as a prerequisite of bundle.
bundle: $(VENV_STAMP) bundle-deps
	$(PY) -m board.image.bundle --image-dir $(IMAGE_DIR) --key-dir $(IMAGE_DIR)/keys \
	  $(if $(BUNDLE_VERSION),--version $(BUNDLE_VERSION)) $(BUNDLE_ARGS)
