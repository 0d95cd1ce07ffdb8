"""The README's quickstart, followed literally: its commands are read out of README.md, the
tic-tac-toe ones run as written (plus a small step override) in a fresh directory, and what
the README says they show is checked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO

README = REPO / "README.md"
SHORT = [
    "--set",
    "trainer.steps=25",
    "--set",
    "trainer.eval_every=25",
]  # the first evaluation at step 25


def quickstart_commands() -> list[str]:
    """The commands of the README's Quickstart section's ```sh blocks, comments dropped."""
    text = README.read_text()
    assert "\n## Quickstart\n" in text, "README.md has no '## Quickstart' section"
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.split("#")[0].strip()
    ]


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == ".venv/bin/chessrl", command
    return [sys.executable, "-m", "chessrl", *words[1:]]


def test_quickstart_installs_then_runs_tictactoe_then_chess():
    commands = quickstart_commands()
    assert commands[0] == "make setup"
    ttt = [c for c in commands if "tictactoe" in c]
    assert [shlex.split(c)[1] for c in ttt] == ["run", "report"], commands
    assert commands.index(ttt[0]) < commands.index("make run"), "tic-tac-toe comes first"


def test_make_run_is_the_quick_chess_recipe():
    """`make run` does what the README's comment on it says, and that config loads."""
    line = next(
        ln for ln in README.read_text().splitlines() if ln.startswith("make run ") and "=" in ln
    )
    said = line.split("=", 1)[1].strip()
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0 and said in dry.stdout.splitlines(), (said, dry.stdout, dry.stderr)
    config = shlex.split(said)[-1]
    res = subprocess.run(
        _argv(f".venv/bin/chessrl config show {config}"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0 and 'name = "chess"' in res.stdout, res.stderr


@pytest.mark.slow
def test_tictactoe_quickstart_followed_literally(tmp_path):
    """The run and the report of the quickstart, in an empty directory with the repository's
    examples: the first evaluation after step 0 beats the random player beyond the noise and
    the trainer says so; the report writes report.md and a self-contained report.html."""
    (tmp_path / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    run, report = [c for c in quickstart_commands() if "tictactoe" in c]

    res = subprocess.run(
        _argv(run) + SHORT, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert "\r" not in err  # a log, not a terminal: plain lines
    assert re.search(r"^eval step 0: perfect .*random .*$", err, re.M), err
    assert re.search(r"^eval step 25: perfect .*random .*$", err, re.M), err
    assert re.search(r"^tictactoe: step 25/25 \(100%\)", err, re.M), err
    improving = re.search(
        r"^health info \[eval_trend\] step 25: eval/random/score is improving: "
        r"([0-9.]+) at step 0 .* -> ([0-9.]+) at step 25 .*95% CI \+([0-9.]+) to",
        err,
        re.M,
    )
    assert improving, err
    assert float(improving.group(3)) > 0  # the interval of the difference excludes 0

    run_dir = tmp_path / shlex.split(report)[-1]
    res = subprocess.run(
        _argv(report), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "report.md").read_text().startswith("# Run report")
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and not re.search(r'<img src="(?!data:)', html)
