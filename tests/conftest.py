"""Shared fixtures: a throwaway plugin registered for one test, the CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chessrl import pluginmanager

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def register_plugin():
    """Register plugin objects with the process-wide manager for one test, then remove them."""
    pm = pluginmanager.get_plugin_manager()
    added = []

    def register(obj, name: str):
        pm.register(obj, name=name)
        pluginmanager._registry_cache.clear()
        added.append(name)
        return obj

    yield register
    for name in added:
        pm.unregister(name=name)
    pluginmanager._registry_cache.clear()


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m chessrl ARGS`` and capture its output."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "chessrl", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


def pip_install_copy(package: Path, tmp_path: Path) -> Path:
    """``pip install`` the package folder ``package`` (copied first: setuptools writes build/
    and *.egg-info next to the sources) into ``tmp_path/site``, so the shared venv stays
    untouched; returns that folder, to put on ``sys.path`` or ``PYTHONPATH``."""
    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(package, src)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


@pytest.fixture
def cli():
    return run_cli


def main_in_process(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (a subprocess would pay the torch import again):
    (rc, stdout, stderr)."""
    import contextlib
    import io

    from chessrl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def cli_in_process():
    return main_in_process


TINY_TTT = """
name = "tiny"
seed = 3
[env]
name = "tictactoe"
[policy]
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
[rollout]
roots = 4
group_size = 4
plies = 9
train_plies = "both"
[trainer]
steps = 6
lr = 1e-3
checkpoint_every = 2
keep_checkpoints = 2
budget_every = 1
health_window = 3
[logging]
wandb = "disabled"
progress = false
"""


@pytest.fixture
def tiny_config(tmp_path):
    """A seconds-long tic-tac-toe experiment TOML; returns its path."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_TTT)
    return p


@pytest.fixture(scope="session")
def tiny_ttt_run(tmp_path_factory):
    """A tic-tac-toe run directory trained for 2 steps of TINY_TTT (initial.pt and
    step_0000002.pt)."""
    from chessrl.config import load_config
    from chessrl.trainer import train

    root = tmp_path_factory.mktemp("tiny_ttt")
    (root / "tiny.toml").write_text(TINY_TTT)
    train(
        load_config(root / "tiny.toml"),
        root / "run",
        max_steps=2,
        progress=False,
        echo=lambda line: None,
    )
    return root / "run"


def random_positions(n: int, seed: int) -> list:
    """``n`` distinct non-terminal chess positions from seeded random play (2-40 plies)."""
    import numpy as np

    from chessrl.envs.chess.starts import distinct_random_positions

    return distinct_random_positions(n, np.random.default_rng(seed), (2, 40))
