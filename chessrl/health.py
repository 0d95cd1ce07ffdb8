"""Run health: findings computed from the rows of ``metrics.jsonl`` alone.

The trainer feeds every logged row to a :class:`HealthMonitor` and prints each finding once,
as one line, the step it first appears; ``chessrl report`` replays a run's rows through the
same monitor. Every rule and threshold below is documented in docs/diagnostics.md; the
thresholds are module constants so the docs and the code can be checked against each other.

The monitor keeps O(window) values per metric key plus running sums, so ``update`` costs the
same at step 10 and at step 10,000.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from chessrl.stats import Trend, peak_is_noise, score_difference, trend

__all__ = [
    "Finding", "NotEvaluated", "HealthMonitor", "PluginSummary", "KeyStats", "Declared",
    "DECLARED_KINDS", "declared_key", "parse_declared",
    "SATURATED_FRAC", "DOMINANT_SHARE", "OPPOSES_COS", "CLIP_HIGH", "RATIO_MEAN_TOL",
    "RATIO_MAXDEV_TOL", "ENTROPY_COLLAPSE_FRAC", "ENTROPY_DECLINE_WINDOWS", "ENTROPY_DECLINE_DROP",
    "ZERO_STD_FRAC", "TREND_MIN_WINDOWS", "EVAL_MIN_EVALS", "EVAL_ALPHA",
]

# --- thresholds (docs/diagnostics.md, "Health findings") --------------------------------
SATURATED_FRAC = 0.8           # at_bound on more than this fraction of the last window
DOMINANT_SHARE = 0.5           # a non-objective term's mean grad_share above this
OPPOSES_COS = 0.0              # a term's mean cos_objective below this
CLIP_HIGH = 0.3                # mean train/clip_fraction above this
RATIO_MEAN_TOL = 1e-6          # |train/ratio_first_epoch - 1| above this, any step
RATIO_MAXDEV_TOL = 1e-5        # train/ratio_first_epoch_maxdev above this, any step
ENTROPY_COLLAPSE_FRAC = 0.25   # last-window mean entropy below this fraction of the first window's
ENTROPY_DECLINE_WINDOWS = 5    # ... or this many consecutive window means, each lower than the last,
ENTROPY_DECLINE_DROP = 0.10    # ... falling by more than this fraction of the first window's mean
ZERO_STD_FRAC = 0.5            # mean rollout/zero_std_frac above this
TREND_MIN_WINDOWS = 3          # window means needed before a reward trend is reported
EVAL_MIN_EVALS = 3             # evaluations of one opponent needed before judging its peak
EVAL_TREND_MIN_EVALS = 2       # evaluations of one opponent needed before judging first -> last
EVAL_ALPHA = 0.05              # family-wise level of the eval peak test (stats.peak_is_noise)

OBJECTIVE = "objective"
ENTROPY_KEY = "train/entropy"
RETURN_KEY = "rollout/return_mean"
SEVERITIES = ("error", "warning", "info")

_FLAG_KEYS = ("acted", "at_bound")

# --- reference lines a plugin declares (PluginReport.bounds / targets / floors) ------------
# Logged as ``plugin/<name>/<key>@<kind>``; ``<key>`` is one of the plugin's own metrics
# ("coef") or, when it has a slash, any metrics key ("train/entropy"). docs/diagnostics.md.
DECLARED_KINDS = ("min", "max", "target", "floor")


def declared_key(plugin: str, key: str, kind: str) -> str:
    """The metrics key under which ``plugin`` logs a ``kind`` line ("min", "max", "target", "floor") for ``key``."""
    if kind not in DECLARED_KINDS:
        raise ValueError(f"kind must be one of {DECLARED_KINDS}; got {kind!r}")
    return f"plugin/{plugin}/{key}@{kind}"


def parse_declared(metric: str) -> tuple[str, str, str] | None:
    """``(plugin, full metrics key it refers to, kind)`` of a declared-line key, or None."""
    if not metric.startswith("plugin/") or "@" not in metric:
        return None
    head, kind = metric.rsplit("@", 1)
    parts = head.split("/", 2)
    if kind not in DECLARED_KINDS or len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    plugin, key = parts[1], parts[2]
    return plugin, (key if "/" in key else f"plugin/{plugin}/{key}"), kind


@dataclass(frozen=True)
class Declared:
    """A reference line a plugin declared: ``kind`` ("min", "max", "target", "floor") of the
    metrics key ``key``, its last ``value``, and whether it changed during the run."""

    plugin: str
    key: str
    kind: str
    value: float
    constant: bool
    metric: str   # the plugin/<name>/<key>@<kind> key it is logged under

    def describe(self) -> str:
        short = self.key[len(f"plugin/{self.plugin}/"):] if self.key.startswith(f"plugin/{self.plugin}/") else self.key
        return f"{short} {self.kind} {_fmt(self.value)}" + ("" if self.constant else " (last)")


@dataclass(frozen=True)
class NotEvaluated:
    """A health rule that could not run on this run (yet), and why."""

    code: str
    subject: str
    reason: str

    def line(self) -> str:
        return f"`{self.code}` ({self.subject}): {self.reason}" if self.subject else f"`{self.code}`: {self.reason}"


@dataclass(frozen=True)
class Finding:
    """One diagnosis of a run.

    ``code`` names the rule (``dead``, ``saturated``, ...), ``severity`` is "error",
    "warning" or "info", ``subject`` the plugin, term or metric it concerns, ``message`` one
    line for a human with the numbers in it, ``numbers`` the same numbers for machines,
    ``step`` the step it was computed at. ``state`` distinguishes findings that change their
    verdict (a reward trend going from flat to improving is a new finding).
    """

    code: str
    severity: str
    message: str
    subject: str
    numbers: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    state: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity: a finding with a key seen before is not reported again."""
        return self.code, self.subject, self.state

    def line(self) -> str:
        """The one line the trainer prints."""
        where = f"step {self.step}: " if self.step is not None else ""
        return f"health {self.severity} [{self.code}] {where}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalTrend:
    """First and last evaluation against one opponent and the difference of their scores.

    ``lo``/``hi`` is the 95% interval of ``last_score - first_score``
    (:func:`chessrl.stats.score_difference`); the verdict is "improving" when it lies above 0,
    "declining" below, "flat" otherwise. First and last, not best: picking the best of many
    evaluations would make noise look like progress (the ``eval_noise`` rule).
    """

    opponent: str
    first_step: int
    first_score: float
    first_games: int
    last_step: int
    last_score: float
    last_games: int
    diff: float
    lo: float
    hi: float
    verdict: str

    def describe(self) -> str:
        unit = "items" if "/" in self.opponent else "games"
        return (f"{eval_key(self.opponent)} is {self.verdict}: {self.first_score:.3f} at step {self.first_step} "
                f"({self.first_games} {unit}) -> {self.last_score:.3f} at step {self.last_step} ({self.last_games} "
                f"{unit}), difference {self.diff:+.3f} (95% CI {self.lo:+.3f} to {self.hi:+.3f})")


def eval_key(name: str) -> str:
    """The metrics key of an evaluation series: an opponent's ``eval/<name>/score``, or a
    benchmark proportion's ``eval/<set>/<metric>`` (a name with a slash)."""
    return f"eval/{name}" if "/" in name else f"eval/{name}/score"


@dataclass
class KeyStats:
    """Running statistics of one metric key over the whole run."""

    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    first: float = math.nan
    last: float = math.nan
    first_step: int | None = None
    last_step: int | None = None

    def add(self, step: int, value: float) -> None:
        if self.count == 0:
            self.first, self.first_step = value, step
        self.count += 1
        self.total += value
        self.min, self.max = min(self.min, value), max(self.max, value)
        self.last, self.last_step = value, step

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


@dataclass
class PluginSummary:
    """What a plugin did over the run (the report's Plugins table).

    ``kind`` is "controller" (it reports ``at_bound``), "monitor" (only ``acted``) or
    "term" (neither) unless the trainer says otherwise. ``acted`` counts steps it acted
    (a controller changed its coefficient, a monitor fired); ``steps_since_acted`` is None
    when it never acted.
    """

    name: str
    kind: str
    steps: int
    acted: int
    last_acted_step: int | None
    steps_since_acted: int | None
    at_bound_frac: float           # over the run; NaN without at_bound
    at_bound_frac_window: float    # over the last window; NaN without at_bound
    metrics: dict[str, float]      # last value of each plugin/<name>/<key>


class _Blocks:
    """Means of consecutive, non-overlapping blocks of ``size`` values of one key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.steps: list[float] = []
        self.means: list[float] = []
        self._s = self._v = 0.0
        self._n = 0

    def add(self, step: int, value: float) -> bool:
        """Add a value; True when it completed a block."""
        self._s += step
        self._v += value
        self._n += 1
        if self._n < self.size:
            return False
        self.steps.append(self._s / self.size)
        self.means.append(self._v / self.size)
        self._s = self._v = 0.0
        self._n = 0
        return True


class HealthMonitor:
    """Turns metric rows into :class:`Finding` objects.

    ``window`` is ``trainer.health_window``: window rules look at the values logged in the
    last ``window`` steps and wait until ``window`` steps have been seen. ``plugin_kinds``
    maps plugin names to "controller", "monitor" or "term" (inferred from the keys when
    absent). Bounds, targets and floors come from what the plugins declare
    (``plugin/<name>/<key>@<kind>``, :func:`parse_declared`), never from option names; findings
    never depend on them, only messages. Rows are dicts as written to metrics.jsonl; missing
    keys and non-numeric values are ignored, so rows of any age or completeness are fine.
    """

    def __init__(self, window: int, plugin_kinds: dict[str, str] | None = None) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2; got {window}")
        self.window = window
        self.plugin_kinds = dict(plugin_kinds or {})
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.steps_seen = 0
        self.stats: dict[str, KeyStats] = {}
        self._recent: dict[str, deque[tuple[int, float]]] = {}
        self._blocks = {RETURN_KEY: _Blocks(window), ENTROPY_KEY: _Blocks(window)}
        self._ratio_bad: dict[str, Any] | None = None
        self._ratio_bad_steps = 0
        self._evals: dict[str, list[tuple[int, float, int]]] = {}
        self._return_trend: Trend | None = None
        self._last_acted: dict[str, int] = {}
        self._current: list[Finding] = []
        self._raised: dict[tuple[str, str, str], Finding] = {}

    # --- feeding -------------------------------------------------------------------------

    def update(self, row: dict[str, Any]) -> list[Finding]:
        """Take one metrics row; return the findings that appear for the first time."""
        step = row.get("step")
        if not _number(step):
            return []
        step = int(step)
        if step != self.last_step and step > 0:  # step 0 is the initial policy's evaluation, not a step
            self.steps_seen += 1
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        for key, value in row.items():
            if key == "step" or not _number(value):
                continue
            value = float(value)
            if not math.isfinite(value):
                continue
            self.stats.setdefault(key, KeyStats()).add(step, value)
            self._recent.setdefault(key, deque(maxlen=self.window)).append((step, value))
            if key in self._blocks and self._blocks[key].add(step, value) and key == RETURN_KEY:
                self._refresh_trend()
            if key.startswith("plugin/") and key.endswith("/acted") and value != 0.0:
                self._last_acted[key.split("/")[1]] = step
        self._check_ratio(row, step)
        self._record_evals(row, step)
        self._current = self._evaluate()
        new = [f for f in self._current if f.key not in self._raised]
        for f in new:
            self._raised[f.key] = f
        return new

    def findings(self) -> list[Finding]:
        """All findings that hold after the last row, most severe first."""
        return list(self._current)

    def not_evaluated(self) -> list[NotEvaluated]:
        """The rules that could not run on the rows seen so far, each with what it needs.

        "No findings" means something only next to this list: a 40-step run with a 50-step
        window has run none of the window rules. Rules whose metrics a run never logs (no
        plugin logs ``acted``) are not listed; rules that wait for a window, for windows of a
        metric or for evaluations are, with the numbers (needs 50 steps, run has 40).
        """
        w, seen, out = self.window, self.steps_seen, []

        def steps(n: int, has: int, what: str = "steps") -> str:
            return f"needs {n} {what}, run has {has}"

        for name in self.plugin_names():
            acted = self.stats.get(f"plugin/{name}/acted")
            if acted is not None and self.plugin_summary(name).acted == 0 and not (acted.count >= w and self.window_full):
                out.append(NotEvaluated("dead", name, steps(w, min(acted.count, seen))))
            if f"plugin/{name}/at_bound" in self.stats and not self.window_full:
                out.append(NotEvaluated("saturated", name, steps(w, seen)))
        if not self.window_full:
            if any(t != OBJECTIVE for t in self.budget_terms()):
                out.append(NotEvaluated("dominant", "", steps(w, seen)))
                out.append(NotEvaluated("opposes_objective", "", steps(w, seen)))
            for code, key in (("clip_high", "train/clip_fraction"), ("zero_std_groups", "rollout/zero_std_frac")):
                if key in self.stats:
                    out.append(NotEvaluated(code, key, steps(w, seen)))
        if ENTROPY_KEY in self.stats:
            n = self.stats[ENTROPY_KEY].count
            if not self._blocks[ENTROPY_KEY].means:
                out.append(NotEvaluated("entropy_collapse", ENTROPY_KEY, steps(w, n, f"values of {ENTROPY_KEY}")))
            elif len(self._blocks[ENTROPY_KEY].means) < ENTROPY_DECLINE_WINDOWS:
                out.append(NotEvaluated("entropy_collapse", ENTROPY_KEY + " (steady decline)",
                                        steps(ENTROPY_DECLINE_WINDOWS * w, n, f"values of {ENTROPY_KEY}")))
        if RETURN_KEY in self.stats and (self._return_trend is None or self._return_trend.n < TREND_MIN_WINDOWS):
            out.append(NotEvaluated("reward_trend", RETURN_KEY,
                                    steps(TREND_MIN_WINDOWS * w, self.stats[RETURN_KEY].count, f"values of {RETURN_KEY}")))
        for opp, evals in self._evals.items():
            for code, n in (("eval_trend", EVAL_TREND_MIN_EVALS), ("eval_noise", EVAL_MIN_EVALS)):
                if len(evals) < n:
                    out.append(NotEvaluated(code, eval_key(opp), steps(n, len(evals), "evaluations")))
        return out

    def raised(self) -> list[Finding]:
        """Every finding ever reported, as first reported (including ones that no longer hold)."""
        return list(self._raised.values())

    # --- window helpers ------------------------------------------------------------------

    def window_values(self, key: str) -> list[float]:
        """Values of ``key`` logged in the last ``window`` steps."""
        if key not in self._recent or self.last_step is None:
            return []
        since = self.last_step - self.window
        return [v for s, v in self._recent[key] if s > since]

    def window_mean(self, key: str) -> float:
        vals = self.window_values(key)
        return sum(vals) / len(vals) if vals else math.nan

    def run_mean(self, key: str) -> float:
        return self.stats[key].mean if key in self.stats else math.nan

    @property
    def window_full(self) -> bool:
        return self.steps_seen >= self.window

    def budget_terms(self) -> list[str]:
        """Loss terms with ``budget/<term>/...`` keys, the objective first."""
        terms = sorted({k.split("/")[1] for k in self.stats if k.startswith("budget/") and k.count("/") == 2})
        return sorted(terms, key=lambda t: t != OBJECTIVE)

    def plugin_names(self) -> list[str]:
        names = {k.split("/")[1] for k in self.stats if k.startswith("plugin/") and k.count("/") >= 2}
        return sorted(names | set(self.plugin_kinds))

    def plugin_summary(self, name: str) -> PluginSummary:
        """Acted count, steps since it last acted, fraction of steps at a bound (run, window)."""
        acted_stats = self.stats.get(f"plugin/{name}/acted")
        bound_key = f"plugin/{name}/at_bound"
        bound_stats = self.stats.get(bound_key)
        kind = self.plugin_kinds.get(name) or ("controller" if bound_stats else "monitor" if acted_stats else "term")
        acted = int(round(acted_stats.total)) if acted_stats else 0
        last_acted = self._last_acted.get(name)
        recent = self.window_values(bound_key)
        prefix = f"plugin/{name}/"
        metrics = {k[len(prefix):]: s.last for k, s in self.stats.items()
                   if k.startswith(prefix) and k[len(prefix):] not in _FLAG_KEYS and parse_declared(k) is None}
        steps = max((s.count for k, s in self.stats.items() if k.startswith(prefix)), default=0)
        return PluginSummary(
            name=name, kind=kind, steps=steps, acted=acted, last_acted_step=last_acted,
            steps_since_acted=(self.last_step - last_acted) if last_acted is not None and self.last_step is not None else None,
            at_bound_frac=bound_stats.mean if bound_stats else math.nan,
            at_bound_frac_window=sum(recent) / len(recent) if recent else math.nan,
            metrics=metrics,
        )

    def declared(self, plugin: str | None = None) -> list[Declared]:
        """The reference lines plugins declared (all, or ``plugin``'s), in the order first logged."""
        out = []
        for metric, st in self.stats.items():
            parsed = parse_declared(metric)
            if parsed is None or (plugin is not None and parsed[0] != plugin):
                continue
            out.append(Declared(parsed[0], parsed[1], parsed[2], st.last, st.min == st.max, metric))
        return out

    @property
    def return_trend(self) -> Trend | None:
        """The trend of rollout/return_mean's window means (None before any block)."""
        return self._return_trend

    def eval_history(self) -> dict[str, list[tuple[int, float, int]]]:
        """Per opponent: (step, score, games) of every evaluation seen."""
        return {k: list(v) for k, v in self._evals.items()}

    def eval_trends(self) -> dict[str, EvalTrend]:
        """Per opponent with at least two evaluations: first -> last, with the difference's CI."""
        out: dict[str, EvalTrend] = {}
        for opp, evals in self._evals.items():
            if len(evals) < EVAL_TREND_MIN_EVALS:
                continue
            (s0, p0, n0), (s1, p1, n1) = evals[0], evals[-1]
            d, lo, hi = score_difference(p0, n0, p1, n1)
            verdict = "improving" if lo > 0 else "declining" if hi < 0 else "flat"
            out[opp] = EvalTrend(opp, s0, p0, n0, s1, p1, n1, d, lo, hi, verdict)
        return out

    def learning_verdict(self) -> tuple[str | None, str]:
        """(verdict, basis): is the run learning, judged on the strongest evidence it has.

        Evaluations against fixed opponents decide when there are any: a self-play return is
        relative to an opponent that learns too, and with varied roots it moves with the roots
        as much as with the policy. "improving" needs an opponent whose score rose beyond its
        interval and none that fell; "declining" the reverse; anything else is "flat" (or
        "mixed"). Without two evaluations the return trend decides; None before either exists.
        """
        trends = self.eval_trends()
        if trends:
            up = [t for t in trends.values() if t.verdict == "improving"]
            down = [t for t in trends.values() if t.verdict == "declining"]
            verdict = ("mixed" if up and down else "improving" if up else "declining" if down else "flat")
            return verdict, "evaluation"
        t = self._return_trend
        if t is not None and t.n >= TREND_MIN_WINDOWS:
            return t.verdict, "reward_trend"
        return None, ""

    # --- row bookkeeping -----------------------------------------------------------------

    def _check_ratio(self, row: dict[str, Any], step: int) -> None:
        age = row.get("train/old_policy_age")
        if _number(age) and float(age) > 0:
            return  # between syncs the old policy is stale by design: the ratio may differ from 1
        ratio, maxdev = row.get("train/ratio_first_epoch"), row.get("train/ratio_first_epoch_maxdev")
        bad_mean = _number(ratio) and not abs(float(ratio) - 1.0) <= RATIO_MEAN_TOL
        bad_dev = _number(maxdev) and not float(maxdev) <= RATIO_MAXDEV_TOL
        if bad_mean or bad_dev:
            self._ratio_bad_steps += 1
            if self._ratio_bad is None:
                self._ratio_bad = {"step": step, "ratio_first_epoch": float(ratio) if _number(ratio) else math.nan,
                                   "ratio_first_epoch_maxdev": float(maxdev) if _number(maxdev) else math.nan}

    def _record_evals(self, row: dict[str, Any], step: int) -> None:
        # match scores (eval/<opponent>/score over eval/<opponent>/games) and benchmark
        # proportions (eval/<set>/<metric> with _lo/_hi, over eval/<set>/n items)
        for key, value in row.items():
            if not (key.startswith("eval/") and key.count("/") == 2 and _number(value)):
                continue
            _, group, metric = key.split("/")
            if metric == "score":
                name, trials = group, row.get(f"eval/{group}/games")
            elif f"{key}_lo" in row and f"{key}_hi" in row:
                name, trials = f"{group}/{metric}", row.get(f"eval/{group}/n")
            else:
                continue
            if not _number(trials) or int(trials) <= 0:
                continue
            self._evals.setdefault(name, []).append((step, float(value), int(trials)))

    def _refresh_trend(self) -> None:
        b = self._blocks[RETURN_KEY]
        self._return_trend = trend(b.steps, b.means)

    # --- the rules -----------------------------------------------------------------------

    def _evaluate(self) -> list[Finding]:
        out: list[Finding] = []
        out += self._plugin_findings()
        out += self._budget_findings()
        out += self._training_findings()
        out += self._eval_findings()
        order = {s: i for i, s in enumerate(SEVERITIES)}
        return sorted(out, key=lambda f: order.get(f.severity, len(order)))

    def _finding(self, code: str, severity: str, subject: str, message: str,
                 numbers: dict[str, Any], state: str = "") -> Finding:
        return Finding(code, severity, message, subject, numbers, self.last_step, state)

    def _plugin_findings(self) -> list[Finding]:
        out: list[Finding] = []
        w = self.window
        for name in self.plugin_names():
            s = self.plugin_summary(name)
            acted_stats = self.stats.get(f"plugin/{name}/acted")
            # dead: has 'acted', seen for at least a window of steps, never acted
            if acted_stats and acted_stats.count >= w and self.window_full and s.acted == 0:
                detail = self._dead_detail(name, s)
                out.append(self._finding(
                    "dead", "warning", name,
                    f"{name} never acted in {acted_stats.count} steps{detail}",
                    {"steps": acted_stats.count, "acted": 0, **s.metrics}))
            # saturated: at_bound on more than SATURATED_FRAC of the last window
            recent = self.window_values(f"plugin/{name}/at_bound")
            if self.window_full and recent:
                frac = sum(1 for v in recent if v) / len(recent)
                if frac > SATURATED_FRAC:
                    coef_key, coef, bound = self._bound_of(name)
                    what = f"{coef_key} {_fmt(coef)} at {bound}" if coef_key else f"at {bound}"
                    out.append(self._finding(
                        "saturated", "warning", name,
                        f"{name} {what} for {frac:.0%} of the last {len(recent)} steps "
                        "(a controller pinned at its bound is a constant)",
                        {"at_bound_frac": frac, "steps": len(recent), "coef": coef, "bound": bound}))
        return out

    def _dead_detail(self, name: str, s: PluginSummary) -> str:
        """Why a plugin never acted: the range of a metric it declared a floor or target on,
        else its own metrics."""
        for d in self.declared(name):
            ws = self.stats.get(d.key)
            if d.kind not in ("floor", "target") or ws is None:
                continue
            watched = d.key.rsplit("/", 1)[-1]
            side = (f"stayed above {d.kind} {_fmt(d.value)}" if ws.min >= d.value
                    else f"stayed below {d.kind} {_fmt(d.value)}" if ws.max <= d.value else f"{d.kind} {_fmt(d.value)}")
            return f" ({watched} {_fmt(ws.min)}–{_fmt(ws.max)}, last {_fmt(ws.last)}, {side})"
        if s.metrics:
            return " (" + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(s.metrics.items())) + ")"
        return ""

    def _bound_of(self, name: str) -> tuple[str | None, float, str]:
        """(coefficient, its last value, "max" / "min" / "a bound") for a controller.

        The coefficient is the metric the plugin declared bounds on (else its documented
        ``plugin/<name>/coef``); the bound is the declared one it sits at, else inferred from
        its history (it rose to its run maximum: max).
        """
        prefix = f"plugin/{name}/"
        bounds = [d for d in self.declared(name) if d.kind in ("min", "max")]
        key = bounds[0].key if bounds else prefix + "coef"
        cs = self.stats.get(key)
        if cs is None:
            return None, math.nan, "a bound"
        label = key[len(prefix):] if key.startswith(prefix) else key
        coef = cs.last
        for d in bounds:
            if d.key == key and math.isclose(coef, d.value, rel_tol=1e-9, abs_tol=1e-12):
                return label, coef, d.kind
        if coef == cs.max and coef > cs.first:
            return label, coef, "max"
        if coef == cs.min and coef < cs.first:
            return label, coef, "min"
        return label, coef, "a bound"

    def _budget_findings(self) -> list[Finding]:
        out: list[Finding] = []
        if not self.window_full:
            return out
        w = self.window
        obj_share = self.window_mean(f"budget/{OBJECTIVE}/grad_share")
        for term in self.budget_terms():
            if term == OBJECTIVE:
                continue
            share = self.window_mean(f"budget/{term}/grad_share")
            if share > DOMINANT_SHARE:
                vshare = self.window_mean(f"budget/{term}/value_share")
                out.append(self._finding(
                    "dominant", "warning", term,
                    f"{term} has {share:.0%} of the gradient (mean budget/{term}/grad_share {share:.3f} over the "
                    f"last {w} steps; value share {_fmt(vshare, '.3f')}; objective's grad share {_fmt(obj_share, '.3f')})",
                    {"grad_share": share, "value_share": vshare, "objective_grad_share": obj_share, "window": w}))
            cos = self.window_mean(f"budget/{term}/cos_objective")
            if cos < OPPOSES_COS:
                out.append(self._finding(
                    "opposes_objective", "warning", term,
                    f"{term}'s gradient opposes the objective's (mean budget/{term}/cos_objective {cos:.3f} "
                    f"over the last {w} steps)",
                    {"cos_objective": cos, "window": w}))
        return out

    def _training_findings(self) -> list[Finding]:
        out: list[Finding] = []
        w = self.window
        if self._ratio_bad is not None:
            b = self._ratio_bad
            out.append(self._finding(
                "ratio_not_one", "error", "train/ratio_first_epoch",
                f"the first-epoch ratio is not 1 (step {b['step']}: train/ratio_first_epoch "
                f"{_fmt(b['ratio_first_epoch'], '.7g')}, maxdev {_fmt(b['ratio_first_epoch_maxdev'], '.3g')}; "
                f"{self._ratio_bad_steps} step(s) so far): sampling and training log-probs differ",
                {**b, "steps": self._ratio_bad_steps}))
        skipped = self.stats.get("train/skipped_steps")
        if skipped is not None and skipped.last > 0:
            out.append(self._finding(
                "skipped_steps", "warning", "train/skipped_steps",
                f"{int(skipped.last)} step(s) skipped so far because the loss, gradient, updated parameters or "
                "logits were not finite (train.log says which)",
                {"skipped_steps": int(skipped.last)}))
        if not self.window_full:
            return out
        clip = self.window_mean("train/clip_fraction")
        if clip > CLIP_HIGH:
            out.append(self._finding(
                "clip_high", "warning", "train/clip_fraction",
                f"mean train/clip_fraction {clip:.3f} over the last {w} steps is above {CLIP_HIGH}: "
                f"{clip:.0%} of plies get no gradient from the objective",
                {"clip_fraction": clip, "window": w}))
        zero = self.window_mean("rollout/zero_std_frac")
        if zero > ZERO_STD_FRAC:
            out.append(self._finding(
                "zero_std_groups", "warning", "rollout/zero_std_frac",
                f"mean rollout/zero_std_frac {zero:.3f} over the last {w} steps: {zero:.0%} of groups tie "
                "and carry no learning signal",
                {"zero_std_frac": zero, "window": w}))
        out += self._entropy_findings()
        t = self._return_trend
        if t is not None and t.n >= TREND_MIN_WINDOWS:
            out.append(self._finding(
                "reward_trend", "info", RETURN_KEY,
                f"{RETURN_KEY} is {t.verdict}: slope {t.slope:+.3g}/step (95% CI {t.lo:+.3g} to {t.hi:+.3g}) "
                f"over {t.n} windows of {w} steps",
                {"slope": t.slope, "lo": t.lo, "hi": t.hi, "verdict": t.verdict, "windows": t.n, "window": w},
                state=t.verdict))
        return out

    def _entropy_findings(self) -> list[Finding]:
        b = self._blocks[ENTROPY_KEY]
        if not b.means:
            return []
        w = self.window
        initial = b.means[0]
        current = self.window_mean(ENTROPY_KEY)
        if initial > 0 and current < ENTROPY_COLLAPSE_FRAC * initial:
            return [self._finding(
                "entropy_collapse", "warning", ENTROPY_KEY,
                f"{ENTROPY_KEY} fell to {current:.3g} (mean of the last {w} steps), {current / initial:.0%} of its "
                f"initial {initial:.3g} (mean of the first {w})",
                {"entropy": current, "initial": initial, "fraction": current / initial, "window": w},
                state="collapsed")]
        n = ENTROPY_DECLINE_WINDOWS
        tail = b.means[-n:]
        if len(tail) == n and all(a > c for a, c in zip(tail, tail[1:])) and \
                initial > 0 and tail[0] - tail[-1] > ENTROPY_DECLINE_DROP * initial:
            return [self._finding(
                "entropy_collapse", "warning", ENTROPY_KEY,
                f"{ENTROPY_KEY} fell in each of the last {n} windows of {w} steps: {tail[0]:.3g} -> {tail[-1]:.3g} "
                f"(initial {initial:.3g})",
                {"from": tail[0], "to": tail[-1], "initial": initial, "windows": n, "window": w},
                state="declining")]
        return []

    def _eval_findings(self) -> list[Finding]:
        out: list[Finding] = []
        for opp, t in self.eval_trends().items():
            out.append(self._finding(
                "eval_trend", "warning" if t.verdict == "declining" else "info", eval_key(opp),
                t.describe(), asdict(t), state=t.verdict))
        for opp, evals in self._evals.items():
            if len(evals) < EVAL_MIN_EVALS:
                continue
            noise, d = peak_is_noise([e[1] for e in evals], [e[2] for e in evals], alpha=EVAL_ALPHA)
            # only a peak that stands out of the level's own interval looks like a peak
            if not noise or not d["peak_score"] > d["level_hi"]:
                continue
            step = evals[d["peak_index"]][0]
            key = eval_key(opp)
            unit = "items" if "/" in opp else "games"
            out.append(self._finding(
                "eval_noise", "info", key,
                f"{key} peak {_fmt(d['peak_score'])} at step {step} ({d['peak_games']} {unit}, 95% CI "
                f"{d['peak_lo']:.3f}–{d['peak_hi']:.3f}) is within the noise of the level {d['level']:.3f} of the "
                f"other {d['evaluations'] - 1} evaluations ({d['level_games']} {unit}): p = {d['p_adjusted']:.2f} "
                f"after picking the best of {d['evaluations']}",
                {**d, "peak_step": step}, state=str(step)))
        return out


def _number(x: Any) -> bool:
    # JSON true/false count as 1/0 (acted, at_bound)
    return isinstance(x, numbers.Real)


def _fmt(x: float, spec: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)
