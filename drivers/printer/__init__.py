"""The ESC/POS thermal printer: profiles, the document renderer and the serial driver.

firmware/app/devices.py picks EscPosSerialPrinter from the board profile; board.sim.printer
emulates the device.
"""

from .escpos_serial import EscPosSerialPrinter, PrinterLostMidCopy
from .profiles import PROFILES, PrinterProfile, get_profile
from .render import parse_status, render, status_query

__all__ = ["PROFILES", "EscPosSerialPrinter", "PrinterLostMidCopy", "PrinterProfile", "get_profile",
           "parse_status", "render", "status_query"]
