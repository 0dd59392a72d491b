#!/bin/sh
# Runs inside the arm64 builder chroot (mmdebstrap customize hook, board/image/build.py): builds
# the firmware's wheel (with _posio for aarch64) and collects every runtime dependency as an aarch64
# wheel, each checked against the hashed locks. The wheels land in /wheels.
set -eu
cd /src
python3 -m venv /builder
# pyscard's build runs swig, which the build lock installs into the builder's venv.
export PATH="/builder/bin:$PATH"
# No debug information in the compiled extensions: pip builds the sdists (evdev, pyscard) in
# randomly named temporary directories, whose paths the debug sections would carry (two builds
# would differ in those bytes alone).
export CFLAGS="-g0"
/builder/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements-build.txt
# Binary wheels are fetched for aarch64; sdists (evdev, pyscard) are compiled here; --require-hashes
# refuses any file whose sha256 is not in the lock.
/builder/bin/pip wheel -q --disable-pip-version-check --require-hashes --no-build-isolation \
    -r requirements-build.txt -r requirements.txt -w /wheels
/builder/bin/pip install -q --disable-pip-version-check --no-index --find-links /wheels cffi
/builder/bin/pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation . -w /wheels
