"""GRPO learns: on tic-tac-toe (exact rewards), a short run beats its own initial policy
against a random mover by more than the two Wilson intervals' noise."""

from pathlib import Path

import numpy as np

from chessrl import checkpoint
from chessrl.config import load_config
from chessrl.match import play_match
from chessrl.metrics import read_metrics
from chessrl.policy import Policy
from chessrl.trainer import make_game, train

REPO = Path(__file__).resolve().parents[1]


def _policy(path):
    state = checkpoint.load(path)
    p = Policy(**state["policy_sizes"])
    p.load_state_dict(state["policy"])
    return p.eval()


def test_short_tictactoe_run_clearly_improves_on_its_initial_policy(tmp_path):
    cfg = load_config(
        REPO / "examples" / "tictactoe.toml",
        [
            "trainer.steps=100",
            "rollout.roots=256",
            "trainer.eval_every=0",
            "logging.progress=false",
        ],
    )
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    game = make_game(cfg, 0)
    starts = game.eval_states(200, np.random.default_rng(0))
    random_mover = game.eval_opponents()["random"]
    results = {}
    for name in ("initial.pt", "step_0000100.pt"):
        policy = _policy(run_dir / "checkpoints" / name)
        results[name] = play_match(game, policy, random_mover, games=400, seed=1, starts=starts)
    before, after = results["initial.pt"], results["step_0000100.pt"]
    assert after.interval()[0] > before.interval()[1], (before.summary(), after.summary())
    rows = read_metrics(run_dir / "metrics.jsonl")
    early = np.mean([r["rollout/reward_mean"] for r in rows[:10]])
    late = np.mean([r["rollout/reward_mean"] for r in rows[-10:]])
    assert late > early  # fewer blunders among the sampled moves


def test_learning_curve_benchmark_prints_every_evaluation(tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "learning_curve.py"),
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--eval-games",
            "8",
            "--set",
            "rollout.roots=8",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [p["step"] for p in result["points"]] == [0, 2, 4]  # step 0: the initial policy
    seconds = [p["seconds"] for p in result["points"]]
    assert seconds == sorted(seconds) and seconds[-1] > 0
    first = result["points"][0]["perfect"]
    assert (
        first["games"] == 8
        and first["non_losing_lo"] <= first["non_losing"] <= first["non_losing_hi"]
    )
