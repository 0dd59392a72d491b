"""The terminal core: the operation lock, recovery, the backlog and the host session, with the
engine's flows carried out against the journal and the host link.

A front end is known only through `contract.py` (TerminalObserver, OperatorInput,
OperatorCancelled; PaperQueue for the print desk), which every part of the app layer may import;
contract.py imports nothing of the app. The core imports nothing from the services or the front
ends: TerminalCore's hooks are where firmware/app/terminal.py plugs the services in, and
`lifecycle.py` is the one reading of the deregistration's state the core needs itself.
"""
