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
    probe = (
        "import sys\nfrom chessrl.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(m for m in "
        + repr(HEAVY)
        + " if m in sys.modules), file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY=\n" in res.stderr, res.stderr
    assert (
        ("chessrl 0.1.0" in res.stdout)
        if args == ["--version"]
        else ("usage: chessrl" in res.stdout)
    )


def test_help_lists_plugin_commands_without_importing_them():
    res = subprocess.run(
        [sys.executable, "-m", "chessrl", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    for command in ("run", "report", "eval", "pretrain"):
        assert re.search(rf"^\s+{command}\s", res.stdout, re.M), res.stdout


def test_report_run_dir_has_help_text():
    res = subprocess.run(
        [sys.executable, "-m", "chessrl", "report", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    positional = res.stdout.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    [line] = [ln for ln in positional.splitlines() if ln.strip().lower().startswith("run_dir")]
    assert len(line.split()) > 1, res.stdout  # the name, then its help text


def _tiny(tmp_path, text: str = TINY_TTT):
    path = tmp_path / "tiny.toml"
    path.write_text(text.replace("progress = false", "progress = true"))
    return path


def _env():
    return {**os.environ, "WANDB_MODE": "disabled"}


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_prints_the_command_that_resumes_the_run(tmp_path, sig, code):
    """Ctrl-C (SIGINT) or SIGTERM mid-run: the last line is a command that, typed as printed,
    continues the run from its checkpoint with the same config and overrides."""
    config, run_dir = _tiny(tmp_path), tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chessrl",
            "run",
            str(config),
            "--run-dir",
            str(run_dir),
            "--set",
            "trainer.steps=100000",
            "--set",
            "trainer.checkpoint_every=100000",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    seen = []
    for line in proc.stderr:  # the first progress line comes after step 1: the run is training
        seen.append(line)
        if line.startswith("tiny: step 1/100000"):
            break
    else:
        pytest.fail("no progress line:\n" + "".join(seen))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(
        r"chessrl: interrupted; resume from the step-(\d+) checkpoint with: (.+)", last
    )
    assert m, err
    step, command = int(m.group(1)), shlex.split(m.group(2))
    assert (run_dir / "checkpoints" / f"step_{step:07d}.pt").exists()
    assert command[-3:] == ["--resume", "--run-dir", str(run_dir)] and "--set" in command
    if sig == signal.SIGINT:  # typed as printed, for two more steps
        res = subprocess.run(
            command + ["--max-steps", "2"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        steps = [
            json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        assert steps == list(range(1, step + 3))


def test_progress_in_a_log_file_is_plain_lines(tmp_path):
    """stderr that is not a terminal gets whole lines: no carriage-return frames, a line after
    the first step and one after the last."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "chessrl",
            "run",
            str(_tiny(tmp_path)),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr
    lines = res.stderr.splitlines()
    assert any(ln.startswith("tiny: step 1/6 (16%), first step ") for ln in lines), res.stderr
    assert re.search(
        r"^tiny: step 6/6 \(100%\), [0-9.]+ s/step; ret [-+][0-9.]+ H [0-9.]+ clip [0-9.]+$",
        res.stderr,
        re.M,
    ), res.stderr


def test_findings_print_above_the_bar_on_a_terminal(tmp_path):
    """On a terminal (a pseudo-terminal here), every line the run prints while the bar is drawn
    starts on a cleared line: the bar is never split by a finding."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chessrl",
            "run",
            str(_tiny(tmp_path)),
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "trainer.eval_every=2",
            "--set",
            "trainer.eval_games=4",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=_env(),
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    out = b"".join(chunks).decode()
    assert "\r" in out and "6/6" in out  # a bar was drawn
    printed = [m.start() for m in re.finditer(r"(eval step|evaluating step|health \w+ \[)", out)]
    assert len(printed) >= 3, out
    for at in printed:
        assert out[at - 1] in "\r\n", repr(out[max(0, at - 200) : at + 80])
