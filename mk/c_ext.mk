# mk/c_ext.mk: make targets for the C extension _posio (c_ext/): build,
# fuzz-deps, fuzz-smoke, fuzz, clean-c-ext.
#
# Include it from the top-level Makefile AFTER defining
#   PY          the venv interpreter           (e.g. PY := .venv/bin/python)
#   VENV_STAMP  the file target that creates the venv with requirements-dev
#               installed (the build needs cffi and setuptools from it)
# because make expands prerequisites when it reads the rule.  Both get
# defaults here so the fragment also works alone:
#   make -f mk/c_ext.mk build|fuzz-deps|fuzz-smoke|fuzz
# Run from the repository root.

PY ?= .venv/bin/python
VENV_STAMP ?=

# ---- the extension ---------------------------------------------------------
# build_posio.py skips the compile itself when _posio.*.so is newer than
# every source, so `build` is cheap to depend on from run/test targets.
.PHONY: build
build: $(VENV_STAMP)
	$(PY) c_ext/build_posio.py

# ---- fuzzing (clang + libFuzzer + ASan/UBSan) ------------------------------
# Two targets: fuzz_frame (reader-link frame codec, frame.c) and fuzz_raster
# (printer raster, raster.c), each with its own read-only seed corpus in git.
# FUZZ_SECONDS and FUZZ_SMOKE_SECONDS are totals, split evenly between them.
CLANG ?= clang
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_TARGETS := frame raster
FUZZ_DIR := build/fuzz
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
# Only the sources each target exercises: the fuzzers need no Python.
FUZZ_SRCS_frame := c_ext/frame.c c_ext/checksum.c
FUZZ_SRCS_raster := c_ext/raster.c
FUZZ_SEEDS_frame := c_ext/corpus
FUZZ_SEEDS_raster := c_ext/corpus_raster
# -fno-sanitize-recover turns every UBSan report into a crash, so a smoke
# run that merely printed a warning cannot pass.
FUZZ_CFLAGS := -g -O1 -std=c11 -Wall -Wextra -Werror \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Ic_ext
# $(call fuzz_run,target,seconds): seeds stay read-only in git; libFuzzer
# writes what it learns to the first corpus directory, under build/.
# Every seed runs first, so a seed that crashes fails every run.
fuzz_run = mkdir -p $(FUZZ_DIR)/$(1)/corpus && \
	$(FUZZ_DIR)/fuzz_$(1) -max_total_time=$(2) -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/$(1)- \
	$(FUZZ_DIR)/$(1)/corpus $(FUZZ_SEEDS_$(1))
# $(call fuzz_share,seconds): one target's share of a total budget (rounded up).
fuzz_share = $$(( ($(1) + $(words $(FUZZ_TARGETS)) - 1) / $(words $(FUZZ_TARGETS)) ))

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300

# Installs clang and its libFuzzer runtime only when a trial link of an empty
# fuzz target fails: having `clang` is not enough, Debian ships libFuzzer in
# a separate libclang-rt-N-dev package matching clang's major version.
.PHONY: fuzz-deps
fuzz-deps:
	@if printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' \
	     | $(CLANG) -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1; then \
	  echo "fuzz-deps: $(CLANG) with libFuzzer is present"; \
	else \
	  echo "fuzz-deps: installing clang and libFuzzer with apt-get"; \
	  $(APT_GET) update && \
	  ver=$$(apt-cache depends clang | sed -n 's/^ *Depends: clang-\([0-9][0-9]*\)$$/\1/p' | head -n 1); \
	  rt=; if [ -n "$$ver" ] && apt-cache show "libclang-rt-$$ver-dev" >/dev/null 2>&1; then rt="libclang-rt-$$ver-dev"; fi; \
	  $(APT_GET) install -y --no-install-recommends clang $$rt; \
	fi

# The sources each binary links come in as extra prerequisites.
$(foreach t,$(FUZZ_TARGETS),$(eval $(FUZZ_DIR)/fuzz_$(t): $(FUZZ_SRCS_$(t))))
$(FUZZ_BINS): $(FUZZ_DIR)/fuzz_%: c_ext/fuzz_%.c c_ext/posio.h
	@mkdir -p $(FUZZ_DIR)
	$(CLANG) $(FUZZ_CFLAGS) $< $(FUZZ_SRCS_$*) -o $@

# libFuzzer exits non-zero (and leaves a <target>-crash-* file in build/fuzz/)
# on any crash, sanitizer report, leak, timeout or failed invariant, and
# make stops at the first target that fails.
.PHONY: fuzz-smoke
fuzz-smoke: fuzz-deps $(FUZZ_BINS)
	$(call fuzz_run,frame,$(call fuzz_share,$(FUZZ_SMOKE_SECONDS)))
	$(call fuzz_run,raster,$(call fuzz_share,$(FUZZ_SMOKE_SECONDS)))

.PHONY: fuzz
fuzz: fuzz-deps $(FUZZ_BINS)
	$(call fuzz_run,frame,$(call fuzz_share,$(FUZZ_SECONDS)))
	$(call fuzz_run,raster,$(call fuzz_share,$(FUZZ_SECONDS)))

.PHONY: clean-c-ext
clean-c-ext:
	rm -rf build/posio $(FUZZ_DIR) _posio.*.so
