"""The app layer: the only code that wires I/O (drivers, sockets, the keypad and LCD) to the
sans-I/O libraries of firmware/ (engine, host, journal, printing, settings, ui).

`core/` is the terminal core (the operation lock, recovery, the backlog, the host session);
`core/contract.py` is what it promises and asks of the services and front ends above it.
`services/` (printing, held orders, review, deregistration, settings) work on the core;
`terminal.py` is the core with the services plugged in, the Terminal the process runs;
`frontends/` (the keypad/LCD panel, the ECR server) drive it. `devices.py` is the only place a
driver is chosen, from the board profiles of `boards.py`. `main.py` is the process
(`python -m firmware.app`, through `__main__.py`), `process.py` what every entry sets up, and
`provision.py` the offline provisioning command (`python -m firmware.app.provision`).
Arrows point one way: core <- services <- terminal.py <- frontends <- main.py. This file
imports nothing: a re-export here would run on every import below it and hide where a name lives.
"""
