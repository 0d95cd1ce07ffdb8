"""``chessrl report``'s command line: one parser for ``chessrl report`` (chessrl/cli.py adds
these arguments to its sub-command) and ``python -m chessrl.report``."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from chessrl.errors import UserError
from chessrl.report.compare import write_comparison
from chessrl.report.data import PLOT_DIR, analyse, build_report, compare_report
from chessrl.report.render import write

HELP = (
    "write RUN_DIR/report.md and report.html (the run's post-mortem); with several runs, a "
    "side-by-side comparison"
)
DESCRIPTION = (
    "Diagnose a run (findings, loss budget, plugins, plots), or compare several side by side."
)


@contextlib.contextmanager
def _writing(where: str | Path) -> Iterator[None]:
    """A report that cannot be written (read-only or full disk, a file in the way) is one
    :class:`UserError` line; every file is written to a temp file and renamed, so none is left
    half-written."""
    try:
        yield
    except OSError as exc:
        raise UserError(
            f"{exc.filename or where}: cannot write the report ({exc.strerror or exc}); free "
            "space or make the directory writable, or print it with --json"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chessrl report``."""
    parser.add_argument(
        "run_dir",
        nargs="+",
        metavar="RUN_DIR",
        help="a run directory (runs/<name>-<timestamp>/ or the run's --run-dir); "
        "it needs only metrics.jsonl and config.toml, so a running or crashed "
        "run works too; give several to compare them side by side",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="steps per health window (default: the run's trainer.health_window)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="with several runs: where the comparison is written "
        "(default: compare-<runs> beside the first run)",
    )


def main(argv: list[str] | None = None) -> int:
    """``chessrl report RUN_DIR [RUN_DIR ...] [--json] [--window N] [--out DIR]``; returns the
    exit code.

    With one run it writes the run's report into it, prints the paths and one line per
    finding and per rule that could not run yet. With several it writes a side-by-side
    comparison into ``--out``. With ``--json`` it writes nothing and prints the data as JSON.
    A missing or empty run directory raises :class:`UserError` (the CLI prints one line,
    exit 2).
    """
    parser = argparse.ArgumentParser(prog="chessrl report", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(args.run_dir, json_out=args.json, window=args.window, out=args.out)


def run_command(
    run_dirs: list[str],
    *,
    json_out: bool = False,
    window: int | None = None,
    out: str | None = None,
) -> int:
    """What ``chessrl report`` does with its parsed arguments; returns the exit code."""
    if window is not None and window < 2:
        raise UserError(f"--window {window}: the health window must be at least 2 steps")
    if out is not None and len(run_dirs) < 2:
        raise UserError(
            "--out is for comparisons: give two or more run directories (one run's "
            "report is written into it)"
        )
    if len(run_dirs) > 1:
        if json_out:
            print(json.dumps(compare_report(run_dirs, window), indent=2))
            return 0
        with _writing(out or run_dirs[0]):
            paths = write_comparison(run_dirs, out, window)
        print(
            f"wrote {paths[0]}, {paths[1]} and {len(paths) - 2} plot(s) comparing "
            f"{len(run_dirs)} runs"
        )
        return 0
    if json_out:
        print(json.dumps(build_report(run_dirs[0], window), indent=2))
        return 0
    analysed = analyse(run_dirs[0], window)
    with _writing(run_dirs[0]):
        paths = write(analysed)
    print(
        f"wrote {paths[0]}, {paths[1]} and {len(paths) - 2} plot(s) in {analysed.path / PLOT_DIR}"
    )
    for finding in analysed.monitor.findings():
        print(finding.line())
    for pending in analysed.monitor.not_evaluated():
        subject = pending.subject + ": " if pending.subject else ""
        print(f"health not evaluated yet [{pending.code}] {subject}{pending.reason}")
    return 0
