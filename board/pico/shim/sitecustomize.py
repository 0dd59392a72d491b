"""Runs at interpreter start when board/pico/shim is on PYTHONPATH: makes `import time` give
the MicroPython-flavoured utime, so `PYTHONPATH=board/pico/shim python board/pico/main.py`
runs the unmodified Pico program on a PC (machine.py says how to wire its UART and buttons).
"""

import sys

import utime

sys.modules["time"] = utime
