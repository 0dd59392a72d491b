"""The sim board: emulated acquirer host, card source and peripherals for tests and `make run`."""
