"""`python -m tests.mutation`: the same as `make mutate`."""

import sys

from tests.mutation.runner import main

sys.exit(main())
