"""The wheel's one thing pyproject.toml cannot say: the C extension _posio, built by cffi from the
builder in c_ext/build_posio.py (the same flags as `make build`)."""

from setuptools import setup

setup(cffi_modules=["c_ext/build_posio.py:wheel_ffibuilder"])
