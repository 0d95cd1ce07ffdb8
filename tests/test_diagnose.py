"""The run writes its own post-mortem: examples/diagnose.toml's three failures are found, with
numbers that match metrics.jsonl, and a short examples/clean.toml run flags none of them."""

from pathlib import Path

import pytest

from chessrl.config import load_config
from chessrl.metrics import read_metrics
from chessrl.report import build_report, write_report
from chessrl.trainer import train

REPO = Path(__file__).resolve().parents[1]
FAILURES = {("dominant", "entropy_bonus"), ("saturated", "adaptive_kl"), ("dead", "entropy_floor")}


@pytest.fixture(scope="module")
def diagnose_run(tmp_path_factory):
    # the controller starts nearer its max (0.05 instead of 0.01), so 16 steps show it pinned
    # there for a whole window of 8, as 24 steps do from 0.01
    cfg = load_config(
        REPO / "examples" / "diagnose.toml",
        ["trainer.steps=16", "trainer.health_window=8", "plugins.adaptive_kl.init=0.05"],
    )
    run_dir = tmp_path_factory.mktemp("diag") / "run"
    lines = []
    train(cfg, run_dir, progress=False, echo=lines.append)
    return run_dir, lines


@pytest.mark.slow
def test_diagnose_report_flags_all_three_failures(diagnose_run):
    run_dir, lines = diagnose_run
    report = build_report(run_dir)
    found = {(f["code"], f["subject"]) for f in report["findings"]}
    assert FAILURES <= found, found
    # each was printed once, as one line, during training
    for code, subject in FAILURES:
        printed = [line for line in lines if f"[{code}]" in line and subject in line]
        assert len(printed) == 1, (code, subject, lines)


@pytest.mark.slow
def test_diagnose_numbers_match_metrics(diagnose_run):
    run_dir, _ = diagnose_run
    rows = read_metrics(run_dir / "metrics.jsonl")
    report = build_report(run_dir)
    window = report["window"]
    last = rows[-window:]
    by = {(f["code"], f["subject"]): f["numbers"] for f in report["findings"]}

    share = sum(r["budget/entropy_bonus/grad_share"] for r in last) / len(last)
    assert by[("dominant", "entropy_bonus")]["grad_share"] == pytest.approx(share, rel=1e-9)
    assert share > 0.5

    at_bound = sum(r["plugin/adaptive_kl/at_bound"] for r in last) / len(last)
    assert by[("saturated", "adaptive_kl")]["at_bound_frac"] == pytest.approx(at_bound)
    assert rows[-1]["plugin/adaptive_kl/coef"] == pytest.approx(0.1)  # its max

    assert sum(r["plugin/entropy_floor/acted"] for r in rows) == 0
    assert by[("dead", "entropy_floor")]["acted"] == 0
    assert min(r["train/entropy"] for r in rows) > 0.05  # the floor


@pytest.mark.slow
def test_report_files_written(diagnose_run):
    run_dir, _ = diagnose_run
    paths = write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert (run_dir / "report.html").exists()
    assert any(p.suffix == ".png" for p in paths)
    for code, subject in FAILURES:
        assert subject in md and code in md


def test_short_clean_run_flags_none(tmp_path):
    cfg = load_config(
        REPO / "examples" / "clean.toml",
        [
            "policy.d_model=64",
            "policy.n_layers=2",
            "policy.n_heads=4",
            "policy.d_ff=128",
            "policy.frozen_layers=0",
            "policy.init_checkpoint=''",
            "rollout.roots=4",
            "rollout.group_size=8",
            "env.depth=2",
            "trainer.steps=12",
            "trainer.health_window=6",
            "trainer.eval_every=0",
            "logging.wandb=disabled",
            "logging.progress=false",
            "device=cpu",
        ],
    )
    run_dir = train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    found = {(f["code"], f["subject"]) for f in build_report(run_dir)["findings"]}
    assert not {c for c, _ in found} & {
        "dominant",
        "saturated",
        "dead",
        "ratio_not_one",
        "clip_high",
    }, found
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert all(r["train/ratio_first_epoch"] == 1.0 for r in rows)
    assert sorted(cfg.plugins) == ["entropy_bonus", "kl_penalty"]
