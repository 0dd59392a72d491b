"""The qemu board: the firmware on a real Linux kernel under QEMU (TCG).

image.py builds the kernel, initramfs and data disk; guest.py boots and drives a guest.
"""
