"""HealthMonitor: each finding fires when it should, not when it shouldn't, and once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chessrl import health
from chessrl.health import Finding, HealthMonitor

WINDOW = 20


def synthetic_rows(
    n: int = 120, *, seed: int = 0, sick: bool = False, evals: bool = True
) -> list[dict]:
    """Metric rows of a scripted run; ``sick`` reproduces the analysed run's pathologies.

    Sick: the entropy bonus has 95% of the gradient, the KL penalty's gradient opposes the
    objective, adaptive_kl multiplies its coefficient by 1.2 per step until it is pinned at
    its max 0.1, entropy_floor (floor 1.5) never fires while entropy stays ~2.7, half the
    plies are clipped, rewards are flat and one eval scores a lucky 0.1 over 64 games.
    Clean: the objective dominates, the controller moves inside its bounds, the monitor
    fires now and then, rewards improve, evals are steady.
    """
    g = np.random.default_rng(seed)
    rows = []
    coef = 0.012
    for step in range(1, n + 1):
        if sick:
            shares = {"objective": 0.03, "entropy_bonus": 0.95, "kl_penalty": 0.02}
            cos = {"objective": 1.0, "entropy_bonus": 0.05, "kl_penalty": -0.3}
            new = min(coef * 1.2, 0.1)
            acted, coef = new != coef, new
            floor_acted = 0
            ret = -0.12 + g.normal(0, 0.05)
            clip = 0.48 + g.normal(0, 0.02)
        else:
            shares = {"objective": 0.7, "entropy_bonus": 0.2, "kl_penalty": 0.1}
            cos = {"objective": 1.0, "entropy_bonus": 0.1, "kl_penalty": 0.05}
            up = g.random() < 0.5
            coef = coef * 1.2 if up else coef / 1.2
            coef = min(max(coef, 0.001), 0.1)
            acted = True
            floor_acted = int(step % 7 == 0)
            ret = -0.2 + 0.004 * step + g.normal(0, 0.05)
            clip = 0.1 + g.normal(0, 0.02)
        row = {
            "step": step,
            "train/clip_fraction": clip,
            "train/ratio_first_epoch": 1.0,
            "train/ratio_first_epoch_maxdev": 0.0,
            "train/entropy": 2.7 + g.normal(0, 0.05),
            "train/kl_old_exact": 0.04 + g.normal(0, 0.005),
            "train/skipped_steps": 0,
            "rollout/return_mean": ret,
            "rollout/zero_std_frac": 0.1,
            "plugin/adaptive_kl/coef": coef,
            "plugin/adaptive_kl/kl": 0.04 + g.normal(0, 0.005),
            "plugin/adaptive_kl/coef@max": 0.1,  # declared by the plugin (PluginReport.bounds)
            "plugin/adaptive_kl/coef@min": 0.001,
            "plugin/adaptive_kl/kl@target": 0.012,  # PluginReport.targets
            "plugin/adaptive_kl/acted": int(acted),
            "plugin/adaptive_kl/at_bound": int(coef in (0.1, 0.001)),
            "plugin/entropy_floor/train/entropy@floor": 1.5,  # PluginReport.floors, on a train/ key
            "plugin/entropy_floor/acted": floor_acted,
        }
        values = {"objective": -0.005, "entropy_bonus": -0.28, "kl_penalty": 0.004}
        total = sum(abs(v) for v in values.values())
        for term in shares:
            row[f"budget/{term}/value"] = values[term]
            row[f"budget/{term}/coef"] = {
                "objective": 1.0,
                "entropy_bonus": 0.1,
                "kl_penalty": coef,
            }[term]
            row[f"budget/{term}/value_share"] = abs(values[term]) / total
            row[f"budget/{term}/grad_share"] = shares[term]
            row[f"budget/{term}/cos_objective"] = cos[term]
        if evals and step % 10 == 0:
            score = (0.1 if step == 60 else 0.03) if sick else 0.4
            wins = round(score * 64)
            row.update(
                {
                    "eval/stockfish/score": score,
                    "eval/stockfish/games": 64,
                    "eval/stockfish/wins": wins,
                    "eval/stockfish/draws": 0,
                    "eval/stockfish/losses": 64 - wins,
                }
            )
        rows.append(row)
    return rows


def run(rows: list[dict], window: int = WINDOW) -> tuple[HealthMonitor, list[Finding]]:
    mon = HealthMonitor(window)
    printed: list[Finding] = []
    for r in rows:
        printed += mon.update(r)
    return mon, printed


def codes(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.code, f.subject) for f in findings}


def test_sick_run_finds_every_pathology():
    mon, printed = run(synthetic_rows(sick=True))
    found = codes(mon.findings())
    for expected in [
        ("dead", "entropy_floor"),
        ("saturated", "adaptive_kl"),
        ("dominant", "entropy_bonus"),
        ("opposes_objective", "kl_penalty"),
        ("clip_high", "train/clip_fraction"),
        ("reward_trend", "rollout/return_mean"),
        ("eval_noise", "eval/stockfish/score"),
    ]:
        assert expected in found, expected
    by = {f.code: f for f in mon.findings()}
    assert "entropy_floor never acted in 120 steps" in by["dead"].message
    assert "above floor 1.5" in by["dead"].message
    assert "adaptive_kl coef 0.1 at max for 100% of the last 20 steps" in by["saturated"].message
    assert by["dominant"].numbers["grad_share"] == pytest.approx(0.95)
    assert "0.950" in by["dominant"].message
    assert by["reward_trend"].numbers["verdict"] == "flat"
    assert by["eval_noise"].numbers["peak_step"] == 60
    assert "p = " in by["eval_noise"].message


def test_clean_run_has_no_warnings():
    mon, printed = run(synthetic_rows(sick=False))
    assert not [f for f in printed if f.severity != "info"], [f.line() for f in printed]
    trend = [f for f in mon.findings() if f.code == "reward_trend"]
    assert trend and trend[0].numbers["verdict"] == "improving"
    assert "eval_noise" not in {f.code for f in mon.findings()}  # steady evals have no peak


def test_findings_are_reported_once():
    mon, printed = run(synthetic_rows(sick=True))
    keys = [f.key for f in printed]
    assert len(keys) == len(set(keys))
    assert sum(f.code == "dead" for f in printed) == 1
    # feeding more of the same adds nothing new
    assert [
        f for f in mon.update({"step": 121, "train/clip_fraction": 0.5}) if f.code == "clip_high"
    ] == []


def test_window_rules_wait_for_a_window():
    mon, printed = run(synthetic_rows(n=WINDOW - 1, sick=True))
    assert not {"dead", "saturated", "dominant", "clip_high"} & {f.code for f in printed}
    assert not mon.window_full


def test_dead_clears_once_the_plugin_acts():
    rows = synthetic_rows(n=40, sick=True)
    mon, printed = run(rows)
    assert "dead" in {f.code for f in mon.findings()}
    mon.update({"step": 41, "plugin/entropy_floor/acted": 1, "plugin/entropy_floor/floor": 1.5})
    assert "dead" not in {f.code for f in mon.findings()}
    assert "dead" in {f.code for f in mon.raised()}
    summary = mon.plugin_summary("entropy_floor")
    assert summary.kind == "monitor" and summary.acted == 1 and summary.steps_since_acted == 0


def test_a_loss_term_that_reports_acted_is_a_term_not_a_monitor():
    rows = [
        {"step": s, "plugin/t/acted": int(s % 2), "budget/t/value": 0.1, "budget/t/raw": 1.0}
        for s in range(1, 6)
    ]
    mon, _ = run(rows)
    assert mon.plugin_summary("t").kind == "term"
    mon2, _ = run([{k: v for k, v in r.items() if not k.startswith("budget/")} for r in rows])
    assert mon2.plugin_summary("t").kind == "monitor"


def test_saturated_needs_most_of_the_window():
    rows = [
        {"step": s, "plugin/c/acted": 1, "plugin/c/coef": 1.0, "plugin/c/at_bound": int(s % 5 != 0)}
        for s in range(1, 41)
    ]  # at bound 80% of the time: not > 80%
    mon, _ = run(rows)
    assert "saturated" not in {f.code for f in mon.findings()}
    for step in range(41, 46):  # the last 20 steps now hold 3 off-bound steps: 85%
        mon.update(
            {"step": step, "plugin/c/acted": 1, "plugin/c/coef": 1.0, "plugin/c/at_bound": 1}
        )
    assert "saturated" in {f.code for f in mon.findings()}
    s = mon.plugin_summary("c")
    assert s.kind == "controller" and s.at_bound_frac_window == pytest.approx(0.85)


def test_ratio_not_one_fires_at_once():
    mon = HealthMonitor(WINDOW)
    assert (
        mon.update(
            {"step": 1, "train/ratio_first_epoch": 1.0, "train/ratio_first_epoch_maxdev": 0.0}
        )
        == []
    )
    new = mon.update(
        {"step": 2, "train/ratio_first_epoch": 1.0, "train/ratio_first_epoch_maxdev": 0.05}
    )
    assert [f.code for f in new] == ["ratio_not_one"] and new[0].severity == "error"
    mon2 = HealthMonitor(WINDOW)
    assert [f.code for f in mon2.update({"step": 1, "train/ratio_first_epoch": 1.0 + 2e-6})] == [
        "ratio_not_one"
    ]


def test_skipped_steps():
    mon = HealthMonitor(WINDOW)
    assert mon.update({"step": 1, "train/skipped_steps": 0}) == []
    new = mon.update({"step": 2, "train/skipped_steps": 2})
    assert [f.code for f in new] == ["skipped_steps"] and "2 step(s)" in new[0].message


def test_entropy_collapse_by_fraction_and_by_decline():
    g = np.random.default_rng(1)
    falling = [
        {"step": s, "train/entropy": 3.0 * math.exp(-s / 30) + g.normal(0, 0.01)}
        for s in range(1, 121)
    ]
    mon, _ = run(falling)
    f = [f for f in mon.findings() if f.code == "entropy_collapse"]
    assert (
        f and f[0].state == "collapsed" and f[0].numbers["fraction"] < health.ENTROPY_COLLAPSE_FRAC
    )
    slow = [
        {"step": s, "train/entropy": 3.0 - 0.008 * s + g.normal(0, 0.01)} for s in range(1, 121)
    ]
    mon, _ = run(slow)
    f = [f for f in mon.findings() if f.code == "entropy_collapse"]
    assert f and f[0].state == "declining"
    flat = [{"step": s, "train/entropy": 3.0 + g.normal(0, 0.05)} for s in range(1, 201)]
    mon, _ = run(flat)
    assert "entropy_collapse" not in {f.code for f in mon.findings()}


def test_zero_std_groups():
    rows = [{"step": s, "rollout/zero_std_frac": 0.7} for s in range(1, 21)]
    mon, _ = run(rows)
    assert "zero_std_groups" in {f.code for f in mon.findings()}
    rows = [{"step": s, "rollout/zero_std_frac": 0.3} for s in range(1, 21)]
    mon, _ = run(rows)
    assert "zero_std_groups" not in {f.code for f in mon.findings()}


def test_reward_trend_verdict_change_is_a_new_finding():
    rows = [
        {"step": s, "rollout/return_mean": 0.0 if s <= 100 else (s - 100) * 0.05}
        for s in range(1, 301)
    ]
    mon, printed = run(rows)
    verdicts = [f.numbers["verdict"] for f in printed if f.code == "reward_trend"]
    assert verdicts[0] == "flat" and verdicts[-1] == "improving"


def test_real_eval_peak_is_not_noise():
    rows = [{"step": s, "eval/sf/score": 0.03, "eval/sf/games": 64} for s in range(1, 11)]
    rows.append({"step": 11, "eval/sf/score": 0.4, "eval/sf/games": 64})
    mon, _ = run(rows)
    assert "eval_noise" not in {f.code for f in mon.findings()}


def test_junk_values_are_ignored():
    mon = HealthMonitor(WINDOW)
    assert mon.update({"no_step": 1}) == []
    assert (
        mon.update(
            {"step": 1, "train/clip_fraction": None, "train/entropy": "nan", "x": float("nan")}
        )
        == []
    )
    assert mon.stats == {}


def test_bounds_and_floor_come_from_what_the_plugins_declare():
    # the keys the built-in plugins log (adaptive_kl, entropy_floor: PluginReport.bounds / floors)
    rows = []
    coef = 0.012
    for s in range(1, 41):
        new = min(coef * 1.5, 0.1)
        acted, coef = new != coef, new
        rows.append(
            {
                "step": s,
                "plugin/adaptive_kl/coef": coef,
                "plugin/adaptive_kl/kl": 0.05,
                "plugin/adaptive_kl/coef@min": 1e-5,
                "plugin/adaptive_kl/coef@max": 0.1,
                "plugin/adaptive_kl/kl@target": 0.012,
                "plugin/adaptive_kl/acted": int(acted),
                "plugin/adaptive_kl/at_bound": int(coef == 0.1),
                "plugin/entropy_floor/entropy": 2.7,
                "plugin/entropy_floor/times_fired": 0.0,
                "plugin/entropy_floor/train/entropy@floor": 1.5,
                "plugin/entropy_floor/acted": 0,
                "train/entropy": 2.7,
            }
        )
    mon = HealthMonitor(WINDOW, plugin_kinds={"entropy_floor": "monitor"})
    for r in rows:
        mon.update(r)
    by = {f.code: f for f in mon.findings()}
    assert "adaptive_kl coef 0.1 at max for 100% of the last 20 steps" in by["saturated"].message
    assert by["dead"].message == (
        "entropy_floor never acted in 40 steps (entropy 2.7–2.7, last 2.7, stayed above floor 1.5)"
    )
    declared = {(d.plugin, d.key, d.kind): d.value for d in mon.declared()}
    assert declared == {
        ("adaptive_kl", "plugin/adaptive_kl/coef", "min"): 1e-5,
        ("adaptive_kl", "plugin/adaptive_kl/coef", "max"): 0.1,
        ("adaptive_kl", "plugin/adaptive_kl/kl", "target"): 0.012,
        ("entropy_floor", "train/entropy", "floor"): 1.5,
    }
    assert "coef@max" not in mon.plugin_summary("adaptive_kl").metrics  # lines are not metrics


def test_option_names_are_not_guessed():
    # a plugin metric called 'max' is a metric like any other, not a bound
    rows = [
        {"step": s, "plugin/c/coef": 0.1, "plugin/c/max": 0.1, "plugin/c/at_bound": 1}
        for s in range(1, 21)
    ]
    mon, _ = run(rows)
    [f] = [f for f in mon.findings() if f.code == "saturated"]
    assert f.numbers["bound"] == "a bound" and mon.declared() == []


def test_not_evaluated_says_which_rules_wait_and_for_what():
    rows = synthetic_rows(n=40, sick=True)
    mon, _ = run(rows, window=50)
    pending = {(p.code, p.subject): p.reason for p in mon.not_evaluated()}
    assert pending[("dead", "entropy_floor")] == "needs 50 steps, run has 40"
    assert pending[("saturated", "adaptive_kl")] == "needs 50 steps, run has 40"
    assert {
        ("dominant", ""),
        ("clip_high", "train/clip_fraction"),
        ("reward_trend", "rollout/return_mean"),
    } <= set(pending)
    assert not any(f.severity == "warning" for f in mon.findings())
    # with a window that fits, the same rows are judged and nothing window-bound is left waiting
    mon, _ = run(rows, window=20)
    assert {"dead", "saturated"} <= {f.code for f in mon.findings()}
    assert not {p.code for p in mon.not_evaluated()} & {
        "dead",
        "saturated",
        "dominant",
        "clip_high",
    }
    mon, _ = run(_evals([0.1]))
    assert [p.line() for p in mon.not_evaluated()] == [
        "`eval_trend` (eval/solver/score): needs 2 evaluations, run has 1",
        "`eval_noise` (eval/solver/score): needs 3 evaluations, run has 1",
    ]


def _evals(scores, games=200, every=50, opp="solver"):
    return [
        {"step": i * every, f"eval/{opp}/score": s, f"eval/{opp}/games": games}
        for i, s in enumerate(scores)
    ]


def test_eval_trend_compares_the_first_and_last_evaluation():
    mon, printed = run(_evals([0.0, 0.3, 0.05, 0.12]))  # the best (0.3) is not the last
    t = mon.eval_trends()["solver"]
    assert (t.first_step, t.last_step, t.verdict) == (0, 150, "improving")
    assert t.diff == pytest.approx(0.12) and 0 < t.lo < 0.12 < t.hi
    assert [f.numbers["verdict"] for f in printed if f.code == "eval_trend"] == [
        "improving"
    ]  # reported once
    mon, printed = run(_evals([0.0, 0.01, 0.12]))
    assert [f.numbers["verdict"] for f in printed if f.code == "eval_trend"] == [
        "flat",
        "improving",
    ]
    mon, _ = run(_evals([0.10, 0.3, 0.12]))
    assert mon.eval_trends()["solver"].verdict == "flat"
    mon, _ = run(_evals([0.6, 0.2]))
    (f,) = [f for f in mon.findings() if f.code == "eval_trend"]
    assert f.numbers["verdict"] == "declining" and f.severity == "warning"
    mon, _ = run(_evals([0.2]))
    assert mon.eval_trends() == {}


def test_learning_verdict_prefers_evaluations_to_the_reward_trend():
    flat = [{"step": s, "rollout/return_mean": 0.0} for s in range(1, 301)]
    mon, _ = run(flat)
    assert mon.learning_verdict() == ("flat", "reward_trend")
    rows = [dict(r) for r in flat]
    rows[49].update({"eval/solver/score": 0.0, "eval/solver/games": 200})
    rows[-1].update({"eval/solver/score": 0.12, "eval/solver/games": 200})
    mon, _ = run(rows)
    assert mon.learning_verdict() == ("improving", "evaluation")
    rows[-1].update({"eval/random/score": 0.5, "eval/random/games": 200})
    rows[49].update({"eval/random/score": 0.9, "eval/random/games": 200})
    mon, _ = run(rows)
    assert mon.learning_verdict() == ("mixed", "evaluation")
    assert HealthMonitor(WINDOW).learning_verdict() == (None, "")


def test_the_initial_evaluation_is_not_a_step_of_the_window():
    rows = [{"step": 0, "eval/solver/score": 0.1, "eval/solver/games": 100}]
    rows += [{"step": s, "train/clip_fraction": 0.9} for s in range(1, WINDOW)]
    mon, _ = run(rows)
    assert not mon.window_full and "clip_high" not in {f.code for f in mon.findings()}
    assert [p.reason for p in mon.not_evaluated() if p.code == "clip_high"] == [
        f"needs {WINDOW} steps, run has {WINDOW - 1}"
    ]
    mon.update({"step": WINDOW, "train/clip_fraction": 0.9})
    assert "clip_high" in {f.code for f in mon.findings()}
