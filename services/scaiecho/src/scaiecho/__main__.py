"""``python -m scaiecho serve|worker|migrate|apikeys|budgets|config``."""

from __future__ import annotations

import sys

from scaicommon.cli import main
from scaiecho.app import DEFINITION

if __name__ == "__main__":
    sys.exit(main(DEFINITION))
