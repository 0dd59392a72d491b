#!/bin/sh
# Runs inside the arm64 image's root (mmdebstrap customize hook, board/image/build.py): installs the
# firmware from the wheels into /opt/posfw (a venv on Debian's python3), with no test tools, and
# compiles its bytecode (hash-checked, so the read-only root needs no source timestamps).
set -eu
python3 -m venv --without-pip /opt/posfw
# pip runs from its own wheel and is not installed: the device never installs packages itself.
pip_wheel=$(ls /wheels/pip-*.whl)
# /wheels holds exactly the locked versions (hash-checked, or built from hash-checked sdists, in the
# builder), so resolving from it alone installs the lock.
/opt/posfw/bin/python "$pip_wheel/pip" install -q --disable-pip-version-check --no-index --no-compile \
    --find-links /wheels posfw
# One compile of everything Python on the image: Debian's own byte-compiles at package install
# were removed first (their timestamps vary), so every .pyc here comes from this line.
find /usr/lib/python3 /usr/lib/python3.11 /opt/posfw -name __pycache__ -type d -prune -exec rm -rf {} +
python3 -m compileall -q -j 1 --invalidation-mode unchecked-hash \
    /usr/lib/python3.11 /usr/lib/python3/dist-packages /opt/posfw/lib/python3.11/site-packages >/dev/null
