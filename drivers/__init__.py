"""I/O adapters (keypad, display, card reader, printer), each behind a typing.Protocol."""
