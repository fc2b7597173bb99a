"""``python -m tests.chaos`` (``make chaos``): see tests/chaos/harness.py."""

import sys

from tests.chaos.harness import main

sys.exit(main())
