"""Diagnostics: the self-tests behind the Diagnostics menu (journal, echo, printer, reader,
network, log, version). Each check takes what it needs as arguments and returns a
firmware.ui.core.DiagResult saying PASS/FAIL, why, and what the operator should do next.
"""
