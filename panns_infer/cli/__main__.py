"""``python -m panns_infer.cli``: the same as ``panns-tag``."""

import sys

from . import main

sys.exit(main())
