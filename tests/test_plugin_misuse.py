"""A third-party plugin's mistakes are named in one line (which plugin, what is wrong), and the
state a plugin keeps in plain numpy numbers resumes. Real pluggy registration, real runs of
the tiny tic-tac-toe config; the entry-point conflict through a real pip-installed package."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, pip_install_copy

from chessrl import hookimpl
from chessrl.config import load_config
from chessrl.errors import PluginError
from chessrl.metrics import read_metrics
from chessrl.regularisers import LossTerm, NoOptions, PluginReport, Regulariser
from chessrl.trainer import train

quiet = {"progress": False, "echo": lambda line: None}


class Mood(enum.IntEnum):
    CALM = 1


class Misuse(Regulariser):
    """Does one thing wrong, chosen by the test through ``Misuse.mode``."""

    Config = NoOptions
    mode = ""

    @hookimpl
    def chessrl_loss_terms(self, out, batch, coefs):
        raw = out["loss_objective"] * 0
        bad = {
            "vector": LossTerm("misuse", 0.1, raw.expand(3)),
            "float": LossTerm("misuse", 0.1, 0.5),
            "slash": LossTerm("mis/use", 0.1, raw),
            "taken": LossTerm("objective", 0.1, raw),
        }
        return bad.get(self.mode, LossTerm("misuse", 0.1, raw))

    def report(self, metrics, step):
        if self.mode == "text":
            return PluginReport(metrics={"level": "high"})
        if self.mode == "foreign":
            return PluginReport(metrics={"train/loss": 1.0})
        return PluginReport(metrics={"level": np.float32(0.5)}, acted=False)

    def state_dict(self):
        if self.mode == "set":
            return {"seen": {1, 2}}
        return {"mean": np.float64(1.5), "mood": Mood.CALM, "count": np.int64(3)}

    def load_state_dict(self, state):
        assert state == {"mean": 1.5, "mood": 1, "count": 3}


class Broken(Regulariser):
    Config = NoOptions

    def __init__(self, name, options, coefs):
        raise KeyError("no such table")


class Module:
    @staticmethod
    @hookimpl
    def chessrl_register_regularisers(register):
        register("misuse", Misuse)
        register("broken_init", Broken)


@pytest.fixture
def misuse(register_plugin, monkeypatch):
    register_plugin(Module, "misuse_module")

    def set_mode(mode: str) -> None:
        monkeypatch.setattr(Misuse, "mode", mode)

    return set_mode


@pytest.mark.parametrize(
    "mode, hook, says",
    [
        ("vector", "chessrl_loss_terms", "raw must be a floating scalar tensor"),
        ("float", "chessrl_loss_terms", "raw must be a floating scalar tensor, got float"),
        ("slash", "chessrl_loss_terms", "loss term name 'mis/use'"),
        ("taken", "chessrl_loss_terms", "loss term 'objective' already exists"),
        ("text", "chessrl_step_end", "metric 'level' = 'high': report a real number"),
        ("foreign", "chessrl_step_end", "metric key 'train/loss'"),
        ("set", "chessrl_state_dict", "holds a set"),
    ],
)
def test_a_plugin_mistake_is_one_line_naming_the_plugin(
    misuse, tiny_config, tmp_path, mode, hook, says
):
    misuse(mode)
    cfg = load_config(tiny_config, ["plugins.misuse={}", "trainer.steps=2"])
    with pytest.raises(PluginError) as err:
        train(cfg, tmp_path / "run", **quiet)
    line = str(err.value)
    assert err.value.plugin == "misuse" and err.value.hook == hook and says in line, line
    assert "\n" not in line


def test_a_plugin_that_fails_to_build_is_named(misuse, tiny_config, tmp_path):
    cfg = load_config(tiny_config, ["plugins.broken_init={}", "trainer.steps=1"])
    with pytest.raises(
        PluginError, match=r"plugin 'broken_init' failed in hook __init__: KeyError"
    ):
        train(cfg, tmp_path / "run", **quiet)
    assert not (tmp_path / "run").exists()


def test_numpy_and_enum_state_is_saved_as_plain_data_and_resumes(misuse, tiny_config, tmp_path):
    misuse("")
    cfg = load_config(tiny_config, ["plugins.misuse={}", "trainer.steps=4"])
    run_dir = tmp_path / "run"
    train(cfg, run_dir, max_steps=2, **quiet)
    train(cfg, run_dir, resume=True, **quiet)  # load_state_dict asserts the plain values
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["plugin/misuse/level"] == 0.5 for r in rows)


def test_two_distributions_claiming_one_entry_point_are_both_left_out(tmp_path):
    """A third-party package whose entry point is named like the built-in kl_penalty does not
    silently replace it: both are listed as broken, naming the two distributions."""
    pkg = tmp_path / "pkg"
    (pkg / "dupe_kl").mkdir(parents=True)
    (pkg / "dupe_kl" / "__init__.py").write_text("")
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "dupe-kl"
            version = "0.0.1"
            [project.entry-points.chessrl]
            kl_penalty = "dupe_kl"
            """
        )
    )
    site = pip_install_copy(pkg, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    res = subprocess.run(
        [sys.executable, "-m", "chessrl", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    warning = [line for line in res.stderr.splitlines() if "kl_penalty" in line]
    assert len(warning) == 1 and "EntryPointConflict: registered by" in warning[0]
    assert (
        "dupe-kl (dupe_kl)" in warning[0] and "chessrl (chessrl.plugins.kl_penalty)" in warning[0]
    )


class ClashingCommands:
    @staticmethod
    @hookimpl
    def chessrl_register_commands(subparsers):
        subparsers.add_parser("run", help="a plugin's own 'run'")
        p = subparsers.add_parser("misuse-hello", help="a plugin command")
        p.set_defaults(func=lambda args: print("hello") or 0)


def test_a_plugin_command_named_like_a_builtin_is_left_out_and_the_rest_works(
    register_plugin, cli_in_process
):
    register_plugin(ClashingCommands, "clashing_commands")
    rc, out, err = cli_in_process("misuse-hello")
    assert rc == 0 and out.strip() == "hello"
    assert err.count("a plugin adds command 'run'") == 1
    rc, out, _ = cli_in_process("run", "--help")
    assert rc == 0 and "--resume" in out  # the built-in run command


def test_chessrl_plugins_lists_the_commands_and_evaluators_a_plugin_adds(
    register_plugin, cli_in_process
):
    register_plugin(ClashingCommands, "clashing_commands")
    rc, out, _ = cli_in_process("plugins")
    mine = next(line for line in out.splitlines() if line.startswith("clashing_commands"))
    assert rc == 0 and "command misuse-hello, command run" in mine
    chess = next(line for line in out.splitlines() if line.startswith("chess "))
    assert "command uci" in chess and "evaluator of chess" in chess
