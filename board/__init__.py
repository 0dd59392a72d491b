"""What runs around the firmware on each board: sim/ (the simulator, emulated devices, the
development console and `python -m board.sim.firmware`), qemu/, pico/, systemd/, udev/. The board
profiles themselves are the firmware's: firmware/app/boards.py."""
