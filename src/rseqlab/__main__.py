"""``python -m rseqlab``: the same command as ``rseqlab``."""

import sys

from .cli import main

sys.exit(main())
