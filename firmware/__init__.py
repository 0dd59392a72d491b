"""POS terminal firmware: the sans-I/O libraries (engine, host link, journal, printing,
settings, screens, diagnostics, the ECR wire format) and the app layer that runs them.

Nothing in this package touches hardware directly; drivers/ does, and only firmware/app/
wires the two together (firmware/app/devices.py chooses the drivers).
"""

__version__ = "0.4.0"
