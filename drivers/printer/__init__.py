"""The ESC/POS thermal printer: profiles (profiles.py), the document renderer (render.py) and the
serial driver (escpos_serial.py).

firmware/app/devices.py picks EscPosSerialPrinter from the board profile; board.sim.printer
emulates the device. The package re-exports nothing: the firmware reads the profiles at start
on every board, and only a board with a printer needs the driver and pyserial behind it.
"""
