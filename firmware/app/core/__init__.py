"""The terminal core: the operation lock, recovery, the backlog and the host session, with the
engine's flows carried out against the journal and the host link.

A front end is known only through `contract.py` (TerminalObserver, OperatorInput,
OperatorCancelled), which every part of the app layer may import; contract.py imports nothing of
the app. The rule the core is moving to (issue 15): it imports nothing from the services or the
front ends. Until they are carved out, terminal.py still reaches the print desk, the held
orders, the deregistration and the ECR server.
"""
