"""Board profiles and emulated hardware (sim/, qemu/, pico/)."""
