"""The screens: sans-I/O state machines for the keypad and LCD. core.py is the contract (the
events screens take, the commands they give, the Ui that runs them); one module per flow
(txn, results, menu, idle, entry, review, held orders, deregistration, settings, diagnostics,
reports); machine.py wires them into the terminal's Ui with the routes by which a screen names
one above it. Nothing here touches a driver, the journal or a socket: the front panel
(firmware/app/frontends/panel.py) carries the commands out.
"""
