"""`python -m afrocomet` (also what `accelerate launch -m afrocomet` runs)."""

import sys

from afrocomet.cli import main

sys.exit(main())
