"""The app's front ends: the keypad/LCD panel (panel.py, its diagnostics in panel_diag.py) and
the ECR server (ecr_server.py, with the repeat rule, the refusal audit and the replies it words).

A front end drives the assembled Terminal (firmware/app/terminal.py) and calls the services; it
learns what the terminal does through firmware/app/core/contract.py (TerminalObserver). Nothing
below imports a front end: only firmware/app/main.py builds them. This file imports nothing.
"""
