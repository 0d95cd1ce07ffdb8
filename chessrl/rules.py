"""The health rules: each one a code, a severity, a scope and a check over the run statistics.

:data:`RULES` is the ordered list :class:`chessrl.health.HealthMonitor` runs after every
row. A rule's ``check`` reads a :class:`chessrl.runstats.RunStats` and returns its
:class:`Finding` objects; its ``waiting`` says why it could not run yet
(:class:`NotEvaluated`). A ``"plugin"`` rule is checked for each plugin, a ``"term"`` rule
for each loss term other than the objective, a ``"run"`` rule once. Every rule and threshold
is documented in docs/diagnostics.md under the rule's code (``Rule.anchor``); a test checks the
page against this list.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Callable

from chessrl import keys as K
from chessrl.findings import SCOPES, SEVERITIES, Check, Finding, NotEvaluated, Rule, Waiting, fmt
from chessrl.stats import peak_is_noise

if TYPE_CHECKING:
    from chessrl.runstats import RunStats

__all__ = ["RULES", "Rule", "Finding", "NotEvaluated", "SEVERITIES", "fmt"]

# --- thresholds (docs/diagnostics.md, "Health findings") --------------------------------
SATURATED_FRAC = 0.8  # at_bound on more than this fraction of the last window
DOMINANT_SHARE = 0.5  # a non-objective term's mean grad_share above this
OPPOSES_COS = 0.0  # a term's mean cos_objective below this
CLIP_HIGH = 0.3  # mean train/clip_fraction above this
RATIO_MEAN_TOL = 1e-6  # |train/ratio_first_epoch - 1| above this, any step
RATIO_MAXDEV_TOL = 1e-5  # train/ratio_first_epoch_maxdev above this, any step
ENTROPY_COLLAPSE_FRAC = 0.25  # last-window mean entropy below this fraction of the first window's
ENTROPY_DECLINE_WINDOWS = 5  # ... or this many consecutive window means, each lower than the last,
ENTROPY_DECLINE_DROP = 0.10  # ... falling by more than this fraction of the first window's mean
ZERO_STD_FRAC = 0.5  # mean rollout/zero_std_frac above this
TREND_MIN_WINDOWS = 3  # window means needed before a reward trend is reported
EVAL_MIN_EVALS = 3  # evaluations of one opponent needed before judging its peak
EVAL_TREND_MIN_EVALS = 2  # evaluations of one opponent needed before judging first -> last
EVAL_ALPHA = 0.05  # family-wise level of the eval peak test (stats.peak_is_noise)

RULES: list[Rule] = []


def rule(code: str, severity: str, scope: str = "run") -> Callable[[Check], Rule]:
    """Decorator: register a check as the next rule of :data:`RULES`."""
    assert severity in SEVERITIES and scope in SCOPES

    def register(fn: Check) -> Rule:
        r = Rule(code, severity, scope, fn)
        RULES.append(r)
        return r

    return register


# --- plugins ------------------------------------------------------------------------------


@rule("dead", "warning", "plugin")
def dead(r: Rule, s: RunStats, name: str) -> list[Finding]:
    """Has ``acted``, seen for at least a window of steps, never acted."""
    acted = s.stats.get(K.plugin_key(name, K.ACTED))
    summary = s.plugin_summary(name)
    if not (acted and acted.count >= s.window and s.window_full and summary.acted == 0):
        return []
    return [
        r.finding(
            s,
            name,
            f"{name} never acted in {acted.count} steps{_dead_detail(s, name)}",
            {"steps": acted.count, "acted": 0, **summary.metrics},
        )
    ]


@dead.waits
def _(r: Rule, s: RunStats, name: str) -> list[NotEvaluated]:
    acted = s.stats.get(K.plugin_key(name, K.ACTED))
    if (
        acted is None
        or s.plugin_summary(name).acted != 0
        or (acted.count >= s.window and s.window_full)
    ):
        return []
    return [r.not_evaluated(name, s.window, min(acted.count, s.steps_seen))]


def _dead_detail(s: RunStats, name: str) -> str:
    """Why a plugin never acted: the range of a metric it declared a floor or target on,
    else its own metrics."""
    for d in s.declared(name):
        ws = s.stats.get(d.key)
        if d.kind not in ("floor", "target") or ws is None:
            continue
        watched = d.key.rsplit("/", 1)[-1]
        line = f"{d.kind} {fmt(d.value)}"
        side = (
            f"stayed above {line}"
            if ws.min >= d.value
            else f"stayed below {line}"
            if ws.max <= d.value
            else line
        )
        return f" ({watched} {fmt(ws.min)}–{fmt(ws.max)}, last {fmt(ws.last)}, {side})"
    metrics = s.plugin_summary(name).metrics
    if metrics:
        return " (" + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(metrics.items())) + ")"
    return ""


@rule("saturated", "warning", "plugin")
def saturated(r: Rule, s: RunStats, name: str) -> list[Finding]:
    """at_bound on more than SATURATED_FRAC of the last window."""
    recent = s.window_values(K.plugin_key(name, K.AT_BOUND))
    if not (s.window_full and recent):
        return []
    frac = sum(1 for v in recent if v) / len(recent)
    if frac <= SATURATED_FRAC:
        return []
    coef_key, coef, bound = _bound_of(s, name)
    what = f"{coef_key} {fmt(coef)} at {bound}" if coef_key else f"at {bound}"
    return [
        r.finding(
            s,
            name,
            f"{name} {what} for {frac:.0%} of the last {len(recent)} steps "
            "(a controller pinned at its bound is a constant)",
            {"at_bound_frac": frac, "steps": len(recent), "coef": coef, "bound": bound},
        )
    ]


@saturated.waits
def _(r: Rule, s: RunStats, name: str) -> list[NotEvaluated]:
    if K.plugin_key(name, K.AT_BOUND) in s.stats and not s.window_full:
        return [r.not_evaluated(name, s.window, s.steps_seen)]
    return []


def _bound_of(s: RunStats, name: str) -> tuple[str | None, float, str]:
    """(coefficient, its last value, "max" / "min" / "a bound") for a controller.

    The coefficient is the metric the plugin declared bounds on, else its documented
    ``plugin/<name>/coef``; the bound is the declared one it equals, else "a bound": a bound
    the plugin does not declare is not guessed.
    """
    prefix = K.plugin_key(name, "")
    bounds = [d for d in s.declared(name) if d.kind in ("min", "max")]
    key = bounds[0].key if bounds else K.plugin_key(name, K.COEF)
    cs = s.stats.get(key)
    if cs is None:
        return None, math.nan, "a bound"
    label = key[len(prefix) :] if key.startswith(prefix) else key
    for d in bounds:
        if d.key == key and math.isclose(cs.last, d.value, rel_tol=1e-9, abs_tol=1e-12):
            return label, cs.last, d.kind
    return label, cs.last, "a bound"


# --- the loss budget ----------------------------------------------------------------------


def _waits_for_window(r: Rule, s: RunStats, subject: str) -> list[NotEvaluated]:
    return [] if s.window_full else [r.not_evaluated("", s.window, s.steps_seen)]


@rule("dominant", "warning", "term")
def dominant(r: Rule, s: RunStats, term: str) -> list[Finding]:
    """A non-objective term's window-mean grad share above DOMINANT_SHARE."""
    share = s.window_mean(K.budget_key(term, "grad_share"))
    if not (s.window_full and share > DOMINANT_SHARE):
        return []
    w = s.window
    vshare = s.window_mean(K.budget_key(term, "value_share"))
    obj_share = s.window_mean(K.budget_key(K.OBJECTIVE, "grad_share"))
    return [
        r.finding(
            s,
            term,
            f"{term} has {share:.0%} of the gradient (mean {K.budget_key(term, 'grad_share')} "
            f"{share:.3f} over the last {w} steps; value share {fmt(vshare, '.3f')}; "
            f"objective's grad share {fmt(obj_share, '.3f')})",
            {
                "grad_share": share,
                "value_share": vshare,
                "objective_grad_share": obj_share,
                "window": w,
            },
        )
    ]


dominant.waits(_waits_for_window)


@rule("opposes_objective", "warning", "term")
def opposes_objective(r: Rule, s: RunStats, term: str) -> list[Finding]:
    """A term's window-mean cos_objective below OPPOSES_COS."""
    key = K.budget_key(term, "cos_objective")
    cos = s.window_mean(key)
    if not (s.window_full and cos < OPPOSES_COS):
        return []
    return [
        r.finding(
            s,
            term,
            f"{term}'s gradient opposes the objective's (mean {key} {cos:.3f} "
            f"over the last {s.window} steps)",
            {"cos_objective": cos, "window": s.window},
        )
    ]


opposes_objective.waits(_waits_for_window)


# --- training -----------------------------------------------------------------------------


@rule("ratio_not_one", "error")
def ratio_not_one(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """On any step after a sync, the first-epoch ratio differs from 1 beyond the tolerances."""
    b = s.ratio_off
    if b is None:
        return []
    return [
        r.finding(
            s,
            K.TRAIN_RATIO_FIRST_EPOCH,
            f"the first-epoch ratio is not 1 (step {b['step']}: {K.TRAIN_RATIO_FIRST_EPOCH} "
            f"{fmt(b['ratio_first_epoch'], '.7g')}, "
            f"maxdev {fmt(b['ratio_first_epoch_maxdev'], '.3g')}; "
            f"{s.ratio_off_steps} step(s) so far): sampling and training log-probs differ",
            {**b, "steps": s.ratio_off_steps},
        )
    ]


@rule("skipped_steps", "warning")
def skipped_steps(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """train/skipped_steps (a running total) above 0."""
    skipped = s.stats.get(K.TRAIN_SKIPPED_STEPS)
    if skipped is None or not skipped.last > 0:
        return []
    return [
        r.finding(
            s,
            K.TRAIN_SKIPPED_STEPS,
            f"{int(skipped.last)} step(s) skipped so far because the loss, gradient, updated "
            "parameters or logits were not finite (train.log says which)",
            {"skipped_steps": int(skipped.last)},
        )
    ]


def _waits_for_key_window(key: str) -> Waiting:
    def waiting(r: Rule, s: RunStats, _: str) -> list[NotEvaluated]:
        if key in s.stats and not s.window_full:
            return [r.not_evaluated(key, s.window, s.steps_seen)]
        return []

    return waiting


@rule("clip_high", "warning")
def clip_high(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """Window-mean train/clip_fraction above CLIP_HIGH."""
    clip = s.window_mean(K.TRAIN_CLIP_FRACTION)
    if not (s.window_full and clip > CLIP_HIGH):
        return []
    return [
        r.finding(
            s,
            K.TRAIN_CLIP_FRACTION,
            f"mean {K.TRAIN_CLIP_FRACTION} {clip:.3f} over the last {s.window} steps is above "
            f"{CLIP_HIGH}: {clip:.0%} of plies get no gradient from the objective",
            {"clip_fraction": clip, "window": s.window},
        )
    ]


clip_high.waits(_waits_for_key_window(K.TRAIN_CLIP_FRACTION))


@rule("zero_std_groups", "warning")
def zero_std_groups(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """Window-mean rollout/zero_std_frac above ZERO_STD_FRAC."""
    zero = s.window_mean(K.ROLLOUT_ZERO_STD_FRAC)
    if not (s.window_full and zero > ZERO_STD_FRAC):
        return []
    return [
        r.finding(
            s,
            K.ROLLOUT_ZERO_STD_FRAC,
            f"mean {K.ROLLOUT_ZERO_STD_FRAC} {zero:.3f} over the last {s.window} steps: {zero:.0%} "
            "of groups tie and carry no learning signal",
            {"zero_std_frac": zero, "window": s.window},
        )
    ]


zero_std_groups.waits(_waits_for_key_window(K.ROLLOUT_ZERO_STD_FRAC))


@rule("entropy_collapse", "warning")
def entropy_collapse(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """The window mean fell below a fraction of the first window's, or fell steadily."""
    key, w = K.TRAIN_ENTROPY, s.window
    means = s.block_means(key)
    if not s.window_full or not means:
        return []
    initial, current = means[0], s.window_mean(key)
    if initial > 0 and current < ENTROPY_COLLAPSE_FRAC * initial:
        return [
            r.finding(
                s,
                key,
                f"{key} fell to {current:.3g} (mean of the last {w} steps), "
                f"{current / initial:.0%} of its initial {initial:.3g} (mean of the first {w})",
                {
                    "entropy": current,
                    "initial": initial,
                    "fraction": current / initial,
                    "window": w,
                },
                state="collapsed",
            )
        ]
    n = ENTROPY_DECLINE_WINDOWS
    tail = means[-n:]
    falling = len(tail) == n and all(a > c for a, c in zip(tail, tail[1:]))
    if falling and initial > 0 and tail[0] - tail[-1] > ENTROPY_DECLINE_DROP * initial:
        return [
            r.finding(
                s,
                key,
                f"{key} fell in each of the last {n} windows of {w} steps: {tail[0]:.3g} -> "
                f"{tail[-1]:.3g} (initial {initial:.3g})",
                {"from": tail[0], "to": tail[-1], "initial": initial, "windows": n, "window": w},
                state="declining",
            )
        ]
    return []


@entropy_collapse.waits
def _(r: Rule, s: RunStats, _: str) -> list[NotEvaluated]:
    key = K.TRAIN_ENTROPY
    if key not in s.stats:
        return []
    n, blocks = s.stats[key].count, len(s.block_means(key))
    if not blocks:
        return [r.not_evaluated(key, s.window, n, f"values of {key}")]
    if blocks < ENTROPY_DECLINE_WINDOWS:
        return [
            r.not_evaluated(
                key + " (steady decline)", ENTROPY_DECLINE_WINDOWS * s.window, n, f"values of {key}"
            )
        ]
    return []


@rule("reward_trend", "info")
def reward_trend(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """The trend of rollout/return_mean's window means, once there are TREND_MIN_WINDOWS."""
    key, t, w = K.ROLLOUT_RETURN_MEAN, s.return_trend, s.window
    if not s.window_full or t is None or t.n < TREND_MIN_WINDOWS:
        return []
    return [
        r.finding(
            s,
            key,
            f"{key} is {t.verdict}: slope {t.slope:+.3g}/step (95% CI {t.lo:+.3g} to {t.hi:+.3g}) "
            f"over {t.n} windows of {w} steps",
            {
                "slope": t.slope,
                "lo": t.lo,
                "hi": t.hi,
                "verdict": t.verdict,
                "windows": t.n,
                "window": w,
            },
            state=t.verdict,
        )
    ]


@reward_trend.waits
def _(r: Rule, s: RunStats, _: str) -> list[NotEvaluated]:
    key, t = K.ROLLOUT_RETURN_MEAN, s.return_trend
    if key not in s.stats or (t is not None and t.n >= TREND_MIN_WINDOWS):
        return []
    return [
        r.not_evaluated(key, TREND_MIN_WINDOWS * s.window, s.stats[key].count, f"values of {key}")
    ]


# --- evaluations --------------------------------------------------------------------------


def _waits_for_evals(needs: int) -> Waiting:
    def waiting(r: Rule, s: RunStats, _: str) -> list[NotEvaluated]:
        return [
            r.not_evaluated(K.eval_series_key(opp), needs, len(evals), "evaluations")
            for opp, evals in s.eval_history().items()
            if len(evals) < needs
        ]

    return waiting


@rule("eval_trend", "info")
def eval_trend(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """First against last evaluation of each opponent (a warning when declining)."""
    return [
        r.finding(
            s,
            K.eval_series_key(opp),
            t.describe(),
            asdict(t),
            state=t.verdict,
            severity="warning" if t.verdict == "declining" else None,
        )
        for opp, t in s.eval_trends().items()
    ]


eval_trend.waits(_waits_for_evals(EVAL_TREND_MIN_EVALS))


@rule("eval_noise", "info")
def eval_noise(r: Rule, s: RunStats, _: str) -> list[Finding]:
    """The best evaluation looks like a peak, but the peak test says it is noise."""
    out = []
    for opp, evals in s.eval_history().items():
        if len(evals) < EVAL_MIN_EVALS:
            continue
        noise, d = peak_is_noise([e[1] for e in evals], [e[2] for e in evals], alpha=EVAL_ALPHA)
        # only a peak that stands out of the level's own interval looks like a peak
        if not noise or not d["peak_score"] > d["level_hi"]:
            continue
        step = evals[d["peak_index"]][0]
        key = K.eval_series_key(opp)
        unit = "items" if "/" in opp else "games"
        out.append(
            r.finding(
                s,
                key,
                f"{key} peak {fmt(d['peak_score'])} at step {step} ({d['peak_games']} {unit}, "
                "95% CI "
                f"{d['peak_lo']:.3f}–{d['peak_hi']:.3f}) is within the noise of the level "
                f"{d['level']:.3f} of the other {d['evaluations'] - 1} evaluations "
                f"({d['level_games']} {unit}): p = {d['p_adjusted']:.2f} after picking the best of "
                f"{d['evaluations']}",
                {**d, "peak_step": step},
                state=str(step),
            )
        )
    return out


eval_noise.waits(_waits_for_evals(EVAL_MIN_EVALS))
