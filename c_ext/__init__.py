"""C sources, cffi build script and Python wrapper of the extension `_posio`.

Import the firmware-facing API from c_ext.posio; reference.py is the pure-Python
twin used only by tests; FRAMING.md defines the reader link frame format.
"""
