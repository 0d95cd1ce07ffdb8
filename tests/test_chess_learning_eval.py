"""The held-out chess benchmark in the loop: every evaluation logs it, the learning verdict reads
it, `chessrl eval --benchmark` prints it. Real Stockfish, the shipped benchmark, a tiny policy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from chessrl.config import load_config
from chessrl.envs.chess.game import ChessGame
from chessrl.health import HealthMonitor
from chessrl.metrics import read_metrics
from chessrl.policy import Policy
from chessrl.trainer import train

STOCKFISH = "/usr/games/stockfish"
pytestmark = pytest.mark.skipif(
    not os.access(STOCKFISH, os.X_OK), reason="needs Debian's stockfish"
)

TINY_CHESS = """
name = "tiny-chess"
seed = 1
[env]
name = "chess"
depth = 2
engines = 2
start = "random"
random_plies = 8
max_plies = 40
eval_ladder = ["random", "material_greedy"]
[policy]
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
[rollout]
roots = 2
group_size = 4
plies = 1
[advantage]
returns = "terminal"
[trainer]
steps = 2
lr = 1e-3
eval_every = 2
eval_games = 2
budget_every = 0
[logging]
wandb = "disabled"
progress = false
"""

BENCH_KEYS = ["agreement/top1", "agreement/top3", "mate1/success", "material/success"]


def test_benchmark_scores_a_policy_with_intervals_and_an_elo():
    game = ChessGame(depth=2)
    try:
        torch.manual_seed(0)
        policy = Policy(game.obs_vocab, game.obs_len, game.n_actions, 32, 1, 2, 64).eval()
        weak = game.benchmark(policy, {"random": (0.2, 16), "material_greedy": (0.0, 16)})
        strong = game.benchmark(policy, {"random": (1.0, 16), "material_greedy": (0.6, 16)})
    finally:
        game.close()
    for k in BENCH_KEYS:
        assert weak[f"{k}_lo"] <= weak[k] <= weak[f"{k}_hi"]
    assert weak["agreement/n"] >= 2000 and weak["mate1/n"] >= 300
    assert weak["agreement/top1"] < 0.2  # an untrained policy is near the random mover
    assert weak["ladder/elo_lo"] <= weak["ladder/elo"] <= weak["ladder/elo_hi"]
    assert strong["ladder/elo"] > weak["ladder/elo"] + 300  # the Elo follows the match scores
    assert (
        weak["agreement/top1"] == strong["agreement/top1"]
    )  # the sets do not depend on the matches


def test_eval_opponents_follow_the_ladder_option_and_play_legal_moves():
    game = ChessGame(
        depth=1, eval_ladder=["random", "material_greedy", "eps0.5:skill:0", "stockfish"]
    )
    try:
        opponents = game.eval_opponents()
        assert list(opponents) == ["random", "material_greedy", "eps05_skill_0", "stockfish"]
        states = game.initial_states(3, np.random.default_rng(0))
        for name, opponent in opponents.items():
            actions = opponent(states)
            assert game.observe(states).action_mask[np.arange(3), actions].all(), name
    finally:
        game.close()


def test_a_bad_ladder_rung_is_one_clear_config_error(tmp_path, cli):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        TINY_CHESS.replace('eval_ladder = ["random", "material_greedy"]', 'eval_ladder = ["randm"]')
    )
    r = cli("run", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert (
        r.returncode == 2
        and "unknown ladder rung 'randm'" in r.stderr
        and "Traceback" not in r.stderr
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_every_evaluation_logs_the_benchmark_and_the_verdict_reads_it(tmp_path, cli):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(TINY_CHESS)
    run_dir = train(load_config(cfg_path), tmp_path / "run", progress=False, echo=lambda s: None)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/agreement/top1" in r]
    assert [r["step"] for r in rows] == [0, 2]  # the step-0 baseline and the evaluation at step 2
    for r in rows:
        for k in BENCH_KEYS:
            assert 0.0 <= r[f"eval/{k}_lo"] <= r[f"eval/{k}"] <= r[f"eval/{k}_hi"] <= 1.0
        assert "eval/ladder/elo" in r and "eval/material_greedy/score" in r
    mon = HealthMonitor(window=5)
    for r in read_metrics(run_dir / "metrics.jsonl"):
        mon.update(r)
    assert {"agreement/top1", "mate1/success", "random"} <= set(mon.eval_trends())
    # chessrl eval --benchmark on the final checkpoint, with the run's initial policy beside it
    r = cli("eval", str(run_dir), "--benchmark", "--baselines", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["players"]) == {"checkpoint", "initial", "random"}
    assert out["players"]["checkpoint"]["agreement/top1"] == pytest.approx(
        rows[-1]["eval/agreement/top1"]
    )
    # and the checkpoint against its start on the same positions, paired
    paired = out["paired"]["agreement/top1"]
    first, last = out["players"]["initial"], out["players"]["checkpoint"]
    n = first["agreement/n"]
    assert paired["both"] + paired["first_only"] == round(first["agreement/top1"] * n)
    assert paired["both"] + paired["second_only"] == round(last["agreement/top1"] * n)
    assert paired["lo"] <= paired["difference"] <= paired["hi"]
    text = cli("eval", str(run_dir), "--benchmark", "--baselines")
    assert "checkpoint - initial on the same positions" in text.stdout


@pytest.mark.parametrize("example", ["chess_quick.toml", "chess_gpu.toml"])
def test_the_chess_recipes_train_as_configured(example, tmp_path):
    """The shipped recipes load and train (tiny sizes): guided groups, final-position rewards,
    self-play roots, and the first ratio exactly 1."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(
        repo / "examples" / example,
        [
            "rollout.roots=2",
            "rollout.group_size=4",
            "trainer.steps=2",
            "trainer.eval_every=0",
            "env.engines=2",
            "policy.d_model=32",
            "policy.n_layers=1",
            "policy.n_heads=2",
            "policy.d_ff=64",
            "device='cpu'",
            "logging.wandb='disabled'",
            "logging.progress=false",
        ],
    )
    assert (
        cfg.rollout.plies == 1
        and cfg.rollout.expert_members == 2
        and cfg.advantage.returns == "terminal"
    )
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["train/ratio_first_epoch"] == 1.0 and r["rollout/expert_plies"] == 2 * 2
        assert 0 < r["rollout/reward_searches"] <= 2 * 4 + 2  # the final positions (and roots) only
