"""``python -m chessrl`` (also under ``torchrun``) is the ``chessrl`` command."""

import sys

from chessrl.cli import main

sys.exit(main())
