"""POS terminal firmware: the application (engine, host link, journal, UI, ECR).

Nothing in this package touches hardware directly; drivers/ does, and only
firmware/app.py wires the two together.
"""

__version__ = "0.4.0"
