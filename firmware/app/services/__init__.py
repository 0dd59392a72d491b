"""The app's services: the print desk and its spooler, held orders, the settlement review,
deregistration and the settings commands. A service works on the terminal core (the operation
lock, the journal, the host link) and may import `firmware/app/core/`; it never imports a front
end (the keypad/LCD panel, the ECR server), which call it. This file imports nothing.
"""
