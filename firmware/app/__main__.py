"""`python -m firmware.app`: runs the firmware (the argument list is `main`'s).

Only the call lives here: this file runs as `__main__`, and anything defined in it would exist
twice (once as `__main__`, once when imported by name), so every class stays in its own module.
"""

from firmware.app.main import main

raise SystemExit(main())
