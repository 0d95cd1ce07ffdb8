"""The ``chessrl`` command as a user meets it: a fast start, progress in a log file, a Ctrl-C
that says how to resume. Every test runs the real command in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from conftest import REPO, TINY_TTT

HEAVY = ("torch", "torchrl", "tensordict", "chess.engine", "matplotlib")


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"], ["eval", "--help"]])
def test_cli_start_imports_no_torch(args):
    """Help and version import no torch, TorchRL, tensordict or chess engine: every plugin's
    module and command hook is imported at start, so each keeps its heavy imports lazy."""
    probe = ("import sys\nfrom chessrl.cli import main\n"
             f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
             "print('HEAVY=' + ','.join(m for m in " + repr(HEAVY) + " if m in sys.modules), file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "HEAVY=\n" in res.stderr, res.stderr
    assert ("chessrl 0.1.0" in res.stdout) if args == ["--version"] else ("usage: chessrl" in res.stdout)


def test_help_lists_plugin_commands_without_importing_them():
    res = subprocess.run([sys.executable, "-m", "chessrl", "--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    for command in ("run", "report", "eval", "pretrain"):
        assert re.search(rf"^\s+{command}\s", res.stdout, re.M), res.stdout


def test_report_run_dir_has_help_text():
    res = subprocess.run([sys.executable, "-m", "chessrl", "report", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    [line] = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("run_dir")]
    assert len(line.split()) > 1, res.stdout
