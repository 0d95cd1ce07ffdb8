"""``chessrl report RUN_DIR``: a post-mortem of a run, written from its files alone.

The report replays ``RUN_DIR/metrics.jsonl`` through the same
:class:`chessrl.health.HealthMonitor` the trainer uses, so the findings match what training
printed, and adds the loss budget, the plugins' behaviour, training health, evaluations with
error bars, and plots. It works on a finished, crashed or still-running run. See
docs/diagnostics.md, "Reading a report".

- :mod:`chessrl.report.data`: reading a run and the report as data (``--json``);
- :mod:`chessrl.report.plots`: the plots;
- :mod:`chessrl.report.render`: the Markdown and HTML pages;
- :mod:`chessrl.report.compare`: several runs side by side;
- :mod:`chessrl.report.cli`: the command line.
"""

from chessrl.report.cli import add_arguments, main, run_command
from chessrl.report.compare import write_comparison
from chessrl.report.data import (
    build_report,
    compare_report,
    config_differences,
    load_metrics,
    read_run_metrics,
)
from chessrl.report.render import write_report

__all__ = [
    "load_metrics",
    "read_run_metrics",
    "build_report",
    "write_report",
    "compare_report",
    "write_comparison",
    "config_differences",
    "main",
    "add_arguments",
    "run_command",
]
