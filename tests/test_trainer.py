"""The trainer end to end on tic-tac-toe: metrics, checkpoints, resume, Ctrl-C, skipped steps."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from chessrl import hookimpl
from chessrl.config import load_config
from chessrl.metrics import read_metrics
from chessrl.regularisers import LossTerm, Regulariser
from chessrl.trainer import train

REPO = Path(__file__).resolve().parents[1]


def _steps(run_dir):
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]


def test_run_writes_metrics_config_and_checkpoints(tiny_config, tmp_path):
    run_dir = train(load_config(tiny_config), tmp_path / "run", progress=False, echo=lambda s: None)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(
        r["train/ratio_first_epoch"] == 1.0 and r["train/ratio_first_epoch_maxdev"] == 0.0
        for r in rows
    )
    assert all(r["rollout/logprob_drift"] == 0.0 for r in rows)
    assert all(r["train/ppo_epochs_run"] == 1 for r in rows)
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["initial.pt", "step_0000004.pt", "step_0000006.pt"]  # keep_checkpoints = 2
    assert (run_dir / "config.toml").exists() and (run_dir / "train.log").exists()
    # the budget: per-term gradients sum to the total gradient the optimiser used
    assert rows[0]["budget/objective/grad_share"] == 1.0


def test_initial_policy_is_evaluated_at_step_0_and_not_again_on_resume(tiny_config, tmp_path):
    over = ["trainer.steps=2", "trainer.eval_every=2", "trainer.eval_games=4"]
    run_dir = train(
        load_config(tiny_config, over), tmp_path / "run", progress=False, echo=lambda s: None
    )
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    keys = set(rows[0]) - {"step", "time/eval"}
    assert keys and all(
        k.startswith("eval/") for k in keys
    )  # step 0: the initial policy's evaluation only
    assert (
        rows[0]["eval/perfect/games"] == 4
        and "eval/perfect/score" in rows[2]
        and "eval/perfect/score" not in rows[1]
    )
    train(
        load_config(tiny_config, [*over[1:], "trainer.steps=4"]),
        run_dir,
        resume=True,
        progress=False,
        echo=lambda s: None,
        allow_change=["trainer.steps"],
    )
    assert _steps(run_dir) == [0, 1, 2, 3, 4]
    off = train(
        load_config(tiny_config, [*over, "trainer.eval_initial=false"]),
        tmp_path / "off",
        progress=False,
        echo=lambda s: None,
    )
    assert _steps(off) == [1, 2]


def test_resume_continues_without_gaps_or_duplicates(tiny_config, tmp_path):
    cfg = load_config(tiny_config)
    run_dir = tmp_path / "run"
    train(cfg, run_dir, max_steps=3, progress=False, echo=lambda s: None)
    # a crash after step 3's checkpoint... step 3 is not a checkpoint step (every 2): resume from 2
    assert _steps(run_dir) == [1, 2, 3]
    train(cfg, run_dir, resume=True, progress=False, echo=lambda s: None)
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_resume_is_exact(tiny_config, tmp_path):
    cfg = load_config(tiny_config)
    straight = train(cfg, tmp_path / "a", progress=False, echo=lambda s: None)
    cfg.trainer.checkpoint_every = 3
    split = tmp_path / "b"
    train(cfg, split, max_steps=3, progress=False, echo=lambda s: None)
    train(cfg, split, resume=True, progress=False, echo=lambda s: None)
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(split / "metrics.jsonl")
    for ra, rb in zip(a, b):
        assert ra["rollout/return_mean"] == rb["rollout/return_mean"]
        assert ra["train/loss"] == rb["train/loss"]


def test_a_metrics_file_cut_short_resumes_before_the_cut_and_leaves_no_gap(tiny_config, tmp_path):
    """A power cut can lose the end of metrics.jsonl (not fsynced) while step 4's checkpoint
    survives: the resume starts from a checkpoint whose row is there, and the record has every
    step once, with the values of an uninterrupted run."""
    cfg = load_config(tiny_config)
    straight = train(cfg, tmp_path / "a", progress=False, echo=lambda s: None)
    cut = tmp_path / "b"
    train(cfg, cut, max_steps=4, progress=False, echo=lambda s: None)  # checkpoints 2 and 4
    metrics = cut / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: text.rstrip("\n").rfind("\n") + 30])  # step 4's row, cut
    assert (cut / "checkpoints" / "step_0000004.pt").exists()
    said: list[str] = []
    train(cfg, cut, resume=True, progress=False, echo=said.append)
    assert any("resumed from step 2" in line for line in said)
    assert any("metrics.jsonl ends at step 3" in line for line in said)
    assert _steps(cut) == [1, 2, 3, 4, 5, 6]
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(metrics)
    assert [r["train/loss"] for r in a] == [r["train/loss"] for r in b]


@pytest.mark.slow
def test_existing_run_dir_needs_resume(tiny_config, tmp_path, cli):
    run_dir = tmp_path / "run"
    res = cli(
        "run", str(tiny_config), "--run-dir", str(run_dir), "--max-steps", "1", "--no-progress"
    )
    assert res.returncode == 0, res.stderr
    res = cli(
        "run", str(tiny_config), "--run-dir", str(run_dir), "--max-steps", "1", "--no-progress"
    )
    assert res.returncode == 2 and "pass --resume" in res.stderr
    assert _steps(run_dir) == [1]


class NaNTerm(Regulariser):
    @hookimpl
    def chessrl_loss_terms(self, out, batch, coefs):
        return LossTerm(self.name, 1.0, out["loss_objective"] * float("nan"))


class NaNModule:
    @staticmethod
    @hookimpl
    def chessrl_register_regularisers(register):
        register("nan_term", NaNTerm)


def test_non_finite_loss_skips_the_step(tiny_config, tmp_path, register_plugin):
    register_plugin(NaNModule, "nan_module")
    cfg = load_config(tiny_config, ["plugins.nan_term={}", "trainer.steps=2"])
    torch.manual_seed(0)
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["train/skipped_steps"] for r in rows] == [1, 2]
    assert all(r["train/ppo_epochs_run"] == 0 for r in rows)
    state = torch.load(run_dir / "checkpoints" / "step_0000002.pt", weights_only=False)
    cfg2 = load_config(tiny_config)
    fresh = train(cfg2, tmp_path / "fresh", max_steps=0, progress=False, echo=lambda s: None)
    del fresh
    from chessrl.policy import build_policy
    from chessrl.trainer import make_game

    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        init = build_policy(cfg.policy, make_game(cfg, 0))
    for k, v in init.state_dict().items():
        assert torch.equal(v, state["policy"][k]), k  # never applied


def test_ctrl_c_saves_checkpoint_and_resume_continues(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chessrl",
            "run",
            str(tiny_config),
            "--run-dir",
            str(run_dir),
            "--set",
            "trainer.steps=100000",
            "--set",
            "trainer.checkpoint_every=100000",
            "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    m = re.search(r"checkpoint at step (\d+)", err)
    assert m, err
    last = int(m.group(1))
    assert _steps(run_dir) == list(range(1, last + 1))
    assert (run_dir / "checkpoints" / f"step_{last:07d}.pt").exists()
    cfg = load_config(
        tiny_config, ["trainer.steps=%d" % (last + 2), "trainer.checkpoint_every=100000"]
    )
    train(
        cfg,
        run_dir,
        resume=True,
        progress=False,
        echo=lambda s: None,
        allow_change=["trainer.steps"],
    )
    assert _steps(run_dir) == list(range(1, last + 3))


def test_metric_keys_are_documented(tiny_config, tmp_path):
    doc = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`([a-z_]+/[^`]+)`", doc))
    patterns = [
        re.compile(
            "^"
            + re.escape(d)
            .replace(re.escape("<term>"), "[a-z0-9_]+")
            .replace(re.escape("<name>"), "[a-z0-9_]+")
            .replace(re.escape("<opponent>"), "[a-z0-9_]+")
            .replace(re.escape("<key>"), "[a-z0-9_]+")
            + "$"
        )
        for d in documented
    ]
    cfg = load_config(
        tiny_config,
        [
            "plugins.entropy_bonus.coef=0.01",
            "trainer.steps=2",
            "trainer.eval_every=2",
            "trainer.eval_games=4",
        ],
    )
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    keys = {k for r in read_metrics(run_dir / "metrics.jsonl") for k in r if k != "step"}
    undocumented = sorted(k for k in keys if not any(p.match(k) for p in patterns))
    assert not undocumented, f"document these in docs/metrics.md: {undocumented}"
    assert any(k.startswith("eval/") for k in keys)


def test_wandb_offline_mirrors_metrics_without_network(tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: 'auto' must mean offline
    cfg = load_config(tiny_config, ["logging.wandb=auto", "trainer.steps=2"])
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))  # wandb's own record of the logged rows
    assert _steps(run_dir) == [1, 2]


def test_cosine_lr_schedule_runs_from_lr_to_the_final_fraction(tiny_config, tmp_path):
    """trainer.lr_schedule = "cosine": step 1 trains at lr, the last step at lr * lr_final,
    decreasing in between, and train/lr records it; "constant" keeps lr (the optimiser's own
    rate is what is logged, so the schedule reaches AdamW)."""
    sets = ["trainer.steps=5", "trainer.lr_schedule='cosine'", "trainer.lr_final=0.2"]
    train(load_config(tiny_config, sets), tmp_path / "cos", progress=False, echo=lambda s: None)
    lrs = [r["train/lr"] for r in read_metrics(tmp_path / "cos" / "metrics.jsonl")]
    assert len(lrs) == 5 and lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(2e-4)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[2] == pytest.approx(1e-3 * (0.2 + 0.8 * 0.5))  # half-way: the cosine's mean
    train(
        load_config(tiny_config, ["trainer.steps=3"]),
        tmp_path / "const",
        progress=False,
        echo=lambda s: None,
    )
    lrs = [r["train/lr"] for r in read_metrics(tmp_path / "const" / "metrics.jsonl")]
    assert lrs == [pytest.approx(1e-3)] * 3


def test_the_budget_sees_terms_that_act_after_the_first_epoch(tiny_config, tmp_path):
    """With ppo_steps > 1 the budget is measured on the last epoch: a KL to the old policy is 0
    on the first epoch (the ratio is exactly 1 there) but not on the last, so it must not read
    as an inert term."""
    sets = [
        "trainer.steps=2",
        "trainer.ppo_steps=3",
        "trainer.budget_every=1",
        "plugins.kl_penalty={coef = 0.1, reference = 'old'}",
    ]
    run_dir = train(
        load_config(tiny_config, sets), tmp_path / "run", progress=False, echo=lambda s: None
    )
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "budget/kl_penalty/raw" in r]
    assert len(rows) == 2
    for r in rows:
        assert r["train/ratio_first_epoch"] == 1.0  # the first epoch: old policy == current
        assert r["budget/kl_penalty/raw"] > 0 and r["budget/kl_penalty/grad_norm"] > 0
