"""The app layer: the only code that wires I/O (drivers, sockets, the keypad and LCD) to the
sans-I/O libraries of firmware/ (engine, host, journal, printing, settings, ui).

`core/` is the terminal core (the operation lock, recovery, the backlog, the host session);
`core/contract.py` is what it promises and asks of the services and front ends above it.
`services/` (printing, held orders, review, deregistration, settings) work on the core;
`terminal.py` is the core with the services plugged in, the Terminal the process runs.
`python -m firmware.app` runs the firmware (`__main__.py`). This file imports nothing: a
re-export here would run on every import below it and hide where a name lives.
"""
