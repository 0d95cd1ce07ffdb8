"""``python -m chessrl.report RUN_DIR ...``: the same as ``chessrl report RUN_DIR ...``."""

import sys

from chessrl.cli import main

sys.exit(main(["report", *sys.argv[1:]]))
