"""chessrl eval for every game: the core protocol over the Game contract (tic-tac-toe and the
example nim package from tiny trained checkpoints), chess's own flags kept to chess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pip_install_copy

from chessrl.evaluate import elo_text, format_row
from chessrl.match import MatchResult

REPO = Path(__file__).resolve().parents[1]


def test_tictactoe_checkpoint_against_its_opponents_with_baselines(tiny_ttt_run, cli_in_process):
    rc, stdout, stderr = cli_in_process(
        "eval", str(tiny_ttt_run), "--games", "4", "--baselines", "--json"
    )
    assert rc == 0, stderr
    out = json.loads(stdout)
    assert out["game"] == "tictactoe" and out["name"] == "run step 2"
    assert out["checkpoint"].endswith("checkpoints/step_0000002.pt")
    assert set(out["opponents"]) == {"perfect", "random"}
    for rows in out["opponents"].values():
        assert set(rows) == {"checkpoint", "random", "initial"}
        for row in rows.values():
            assert row["games"] == 4 and row["wins"] + row["draws"] + row["losses"] == 4
            assert 0.0 <= row["score_lo"] <= row["score"] <= row["score_hi"] <= 1.0
    # perfect play never loses
    assert all(row["wins"] == 0 for row in out["opponents"]["perfect"].values())
    # the same seed gives the same games
    rc, again, _ = cli_in_process(
        "eval", str(tiny_ttt_run), "--games", "4", "--baselines", "--json"
    )
    assert rc == 0 and json.loads(again)["opponents"] == out["opponents"]


def test_text_table_and_one_line_mistakes(tiny_ttt_run, cli_in_process):
    rc, stdout, stderr = cli_in_process(
        "eval", str(tiny_ttt_run), "--games", "2", "--opponent", "perfect"
    )
    assert rc == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("run step 2 (tictactoe): 2 games per opponent")
    assert (
        lines[1] == "vs perfect"
        and lines[2].startswith("player")
        and lines[3].startswith("checkpoint")
    )
    assert "vs random" not in stdout and "inf" not in stdout
    for args, says in (
        (["--skill", "3"], "--skill is a chess option of chessrl eval"),
        (["--opponent", "stockfish"], "has the evaluation opponents perfect, random"),
        (["--games", "0"], "--games 0"),
        (["--set", "env.nope=1"], "env.nope"),
    ):
        rc, stdout, stderr = cli_in_process("eval", str(tiny_ttt_run), *args)
        assert rc == 2 and says in stderr and stderr.count("\n") == 1 and stdout == "", (
            args,
            stderr,
        )


@pytest.mark.slow
def test_nim_example_package_is_evaluated_by_the_core(tmp_path):
    """The tutorial game (installed into a temporary target) trains for a step and is evaluated
    against its own opponents, with no code of chessrl's knowing it."""
    target = pip_install_copy(REPO / "examples/games/chessrl_nim", tmp_path)
    (tmp_path / "nim.toml").write_text(
        'name = "nim"\nseed = 1\n[env]\nname = "nim"\n'
        "[policy]\nd_model = 16\nn_layers = 1\nn_heads = 2\nd_ff = 32\n"
        "[rollout]\nroots = 2\ngroup_size = 2\nplies = 4\n[trainer]\nsteps = 1\n[logging]\n"
        'wandb = "disabled"\nprogress = false\n'
    )
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled"}
    run = [sys.executable, "-m", "chessrl"]
    res = subprocess.run(
        run
        + ["run", str(tmp_path / "nim.toml"), "--run-dir", str(tmp_path / "run"), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    res = subprocess.run(
        run + ["eval", str(tmp_path / "run"), "--games", "4", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["game"] == "nim" and set(out["opponents"]) == {"perfect", "random"}
    # 3^4^5 != 0: whoever starts wins with perfect play, so the perfect opponent wins its 2 games
    # as first player
    assert out["opponents"]["perfect"]["checkpoint"]["games"] == 4
    assert out["opponents"]["perfect"]["checkpoint"]["results"][1] == 0.0


def test_an_elo_out_of_range_is_said_with_its_bound():
    lost = MatchResult(losses=16)
    assert elo_text(*lost.elo()) == "below the measurable range (< -248)"
    assert "below the measurable range (< -248)" in format_row("checkpoint", lost)
    assert "inf" not in format_row("checkpoint", lost)
    assert elo_text(*MatchResult(wins=16).elo()) == "above the measurable range (> +248)"
    assert elo_text(*MatchResult(wins=8, losses=8).elo()) == "+0 [-164, +164]"
    assert elo_text(5.0, -math.inf, math.inf) == "+5 [-inf, +inf]"  # no games: nothing is known
    # the report's evaluation table says the same in its two Elo columns
    from chessrl.report.render import elo_cells

    assert elo_cells(*lost.elo()) == ["below the measurable range", "< -248"]
    assert elo_cells(*MatchResult(wins=16).elo()) == ["above the measurable range", "> +248"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--sample", "--temperature", "nan"], "--temperature nan: expected a finite number > 0"),
        (["--sample", "--temperature", "inf"], "--temperature inf: expected a finite number > 0"),
        (["--set", "env.nope=1"], "--set env.nope=1: unknown key 'env.nope'"),
        (["--seed", "-1"], "--seed -1: expected an integer from 0 to 2^63-1"),
        (["--temperature", "-2"], "--temperature -2.0: expected a finite number > 0"),
        (["--games", "99999999999"], "--games 99999999999: play 1 to 100,000 games"),
    ],
)
def test_eval_input_mistakes_are_one_line(cli_in_process, tiny_ttt_run, args, expected):
    rc, _, err = cli_in_process("eval", str(tiny_ttt_run), "--games", "2", *args)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_chess_eval_checks_the_shared_flags_before_anything_is_printed(tmp_path, cli_in_process):
    from test_play import chess_checkpoint

    ckpt = chess_checkpoint(tmp_path / "chess.pt")
    (tmp_path / "games.pgn").write_text('[Event "kept"]\n')
    for args, says in [
        (["--sample", "--temperature", "0"], "--temperature 0.0: expected a finite number > 0"),
        (["--seed", "-1"], "--seed -1: expected an integer"),
        (["--pgn", str(tmp_path)], "a directory; give a file name"),
        (["--pgn", str(tmp_path / "no" / "g.pgn")], "does not exist"),
        (["--max-plies", "0"], "--max-plies 0: expected at least 1"),
        (["--balance", "0"], "--balance 0.0: expected a value in (0, 1]"),
        (["--engines", "0"], "--engines 0: expected 1..64"),
        (["--benchmark", "--skill", "3"], "--skill is for a match against one Stockfish"),
        (["--ladder", "--pgn", str(tmp_path / "games.pgn")], "--pgn is for a match"),
    ]:
        rc, out, err = cli_in_process("eval", str(ckpt), "--games", "2", *args)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and says in err, err
    assert (tmp_path / "games.pgn").read_text() == '[Event "kept"]\n'


def test_a_baseline_initial_checkpoint_of_another_game_is_named(
    tiny_ttt_run, tmp_path, cli_in_process
):
    import shutil

    from test_play import chess_checkpoint

    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(tiny_ttt_run / "checkpoints" / "step_0000002.pt", run / "step_0000002.pt")
    chess_checkpoint(run / "initial.pt")
    rc, _, err = cli_in_process(
        "eval", str(tmp_path / "run"), "--games", "2", "--baselines", "--json"
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "initial checkpoint plays 'chess', this checkpoint 'tictactoe'" in err
