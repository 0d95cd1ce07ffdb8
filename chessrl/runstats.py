"""Run statistics: what the health rules and the report read, computed from metrics rows.

:class:`RunStats` is a streaming store. It keeps, per metric key, running statistics over the
whole run (:class:`KeyStats`) and the values of the last ``window`` steps; window means of
``train/entropy`` and ``rollout/return_mean``; the evaluation history; the first-epoch ratio
checks; what plugins declared. It holds O(window) values per key, so adding a row costs the
same at step 10 and at step 10,000. Rows are dicts as written to metrics.jsonl; missing keys
and non-numeric values are ignored, so rows of any age or completeness are fine.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeGuard

from chessrl import keys as K
from chessrl.findings import fmt
from chessrl.rules import (
    EVAL_TREND_MIN_EVALS,
    RATIO_MAXDEV_TOL,
    RATIO_MEAN_TOL,
    TREND_MIN_WINDOWS,
)
from chessrl.stats import Trend, score_difference, trend

__all__ = ["RunStats", "KeyStats", "PluginSummary", "Declared", "EvalTrend", "is_number"]


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


@dataclass(frozen=True)
class Declared:
    """A reference line a plugin declared: ``kind`` ("min", "max", "target", "floor") of the
    metrics key ``key``, its last ``value``, and whether it changed during the run."""

    plugin: str
    key: str
    kind: str
    value: float
    constant: bool
    metric: str  # the plugin/<name>/<key>@<kind> key it is logged under

    def describe(self) -> str:
        own = K.plugin_key(self.plugin, "")
        short = self.key[len(own) :] if self.key.startswith(own) else self.key
        return f"{short} {self.kind} {fmt(self.value)}" + ("" if self.constant else " (last)")


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
        return (
            f"{K.eval_series_key(self.opponent)} is {self.verdict}: {self.first_score:.3f} at "
            f"step {self.first_step} ({self.first_games} {unit}) -> {self.last_score:.3f} at "
            f"step {self.last_step} ({self.last_games} {unit}), difference {self.diff:+.3f} "
            f"(95% CI {self.lo:+.3f} to {self.hi:+.3f})"
        )


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
    at_bound_frac: float  # over the run; NaN without at_bound
    at_bound_frac_window: float  # over the last window; NaN without at_bound
    metrics: dict[str, float]  # last value of each plugin/<name>/<key>


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


class RunStats:
    """The statistics of a run's metrics rows, fed one row at a time with :meth:`add`.

    ``window`` is ``trainer.health_window``: window statistics are over the values logged in
    the last ``window`` steps. ``plugin_kinds`` maps plugin names to "controller", "monitor"
    or "term" (inferred from the keys when absent). Bounds, targets and floors come from what
    the plugins declare (``plugin/<name>/<key>@<kind>``, :func:`chessrl.keys.parse_declared`).
    """

    BLOCK_KEYS = (K.ROLLOUT_RETURN_MEAN, K.TRAIN_ENTROPY)  # keys with window means over the run

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
        self._blocks = {k: _Blocks(window) for k in self.BLOCK_KEYS}
        self.ratio_off: dict[str, Any] | None = (
            None  # the first step whose first-epoch ratio is off
        )
        self.ratio_off_steps = 0
        self._evals: dict[str, list[tuple[int, float, int]]] = {}
        self._return_trend: Trend | None = None
        self._last_acted: dict[str, int] = {}

    def add(self, row: dict[str, Any]) -> bool:
        """Take one metrics row; False when it has no numeric step (and was ignored)."""
        step = row.get(K.STEP)
        if not is_number(step):
            return False
        step = int(step)
        if step != self.last_step and step > 0:  # step 0 is the initial policy's evaluation
            self.steps_seen += 1
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        for key, value in row.items():
            if key == K.STEP or not is_number(value):
                continue
            value = float(value)
            if not math.isfinite(value):
                continue
            self.stats.setdefault(key, KeyStats()).add(step, value)
            self._recent.setdefault(key, deque(maxlen=self.window)).append((step, value))
            done = key in self._blocks and self._blocks[key].add(step, value)
            if done and key == K.ROLLOUT_RETURN_MEAN:
                b = self._blocks[key]
                self._return_trend = trend(b.steps, b.means)
            if value != 0.0 and key.endswith("/" + K.ACTED) and K.plugin_of(key):
                self._last_acted[key.split("/")[1]] = step
        self._check_ratio(row, step)
        self._record_evals(row, step)
        return True

    # --- windows ---------------------------------------------------------------------------

    @property
    def window_full(self) -> bool:
        return self.steps_seen >= self.window

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

    def block_means(self, key: str) -> list[float]:
        """Means of the consecutive windows of ``key`` (one of :attr:`BLOCK_KEYS`) so far."""
        return list(self._blocks[key].means)

    @property
    def return_trend(self) -> Trend | None:
        """The trend of rollout/return_mean's window means (None before any block)."""
        return self._return_trend

    # --- loss terms and plugins ------------------------------------------------------------

    def budget_terms(self) -> list[str]:
        """Loss terms with ``budget/<term>/...`` keys, the objective first."""
        terms = sorted({t for t in map(K.budget_term, self.stats) if t is not None})
        return sorted(terms, key=lambda t: t != K.OBJECTIVE)

    def plugin_names(self) -> list[str]:
        names = {p for p in map(K.plugin_of, self.stats) if p is not None}
        return sorted(names | set(self.plugin_kinds))

    def plugin_summary(self, name: str) -> PluginSummary:
        """Acted count, steps since it last acted, fraction of steps at a bound (run, window)."""
        acted_stats = self.stats.get(K.plugin_key(name, K.ACTED))
        bound_key = K.plugin_key(name, K.AT_BOUND)
        bound_stats = self.stats.get(bound_key)
        has_term = any(K.budget_term(k) == name for k in self.stats)
        kind = self.plugin_kinds.get(name) or (
            "controller" if bound_stats else "monitor" if acted_stats and not has_term else "term"
        )
        acted = int(round(acted_stats.total)) if acted_stats else 0
        last_acted = self._last_acted.get(name)
        recent = self.window_values(bound_key)
        prefix = K.plugin_key(name, "")
        metrics = {
            k[len(prefix) :]: s.last
            for k, s in self.stats.items()
            if k.startswith(prefix)
            and k[len(prefix) :] not in K.FLAGS
            and K.parse_declared(k) is None
        }
        steps = max((s.count for k, s in self.stats.items() if k.startswith(prefix)), default=0)
        since = None
        if last_acted is not None and self.last_step is not None:
            since = self.last_step - last_acted
        return PluginSummary(
            name=name,
            kind=kind,
            steps=steps,
            acted=acted,
            last_acted_step=last_acted,
            steps_since_acted=since,
            at_bound_frac=bound_stats.mean if bound_stats else math.nan,
            at_bound_frac_window=sum(recent) / len(recent) if recent else math.nan,
            metrics=metrics,
        )

    def declared(self, plugin: str | None = None) -> list[Declared]:
        """The reference lines plugins declared (all, or ``plugin``'s), in the order first
        logged."""
        out = []
        for metric, st in self.stats.items():
            parsed = K.parse_declared(metric)
            if parsed is None or (plugin is not None and parsed[0] != plugin):
                continue
            out.append(Declared(parsed[0], parsed[1], parsed[2], st.last, st.min == st.max, metric))
        return out

    # --- evaluations -----------------------------------------------------------------------

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
            verdict = (
                "mixed" if up and down else "improving" if up else "declining" if down else "flat"
            )
            return verdict, "evaluation"
        t = self._return_trend
        if t is not None and t.n >= TREND_MIN_WINDOWS:
            return t.verdict, "reward_trend"
        return None, ""

    # --- row bookkeeping -------------------------------------------------------------------

    def _check_ratio(self, row: dict[str, Any], step: int) -> None:
        age = row.get(K.TRAIN_OLD_POLICY_AGE)
        if is_number(age) and float(age) > 0:
            return  # between syncs the old policy is stale by design: the ratio may differ from 1
        ratio, maxdev = (
            row.get(K.TRAIN_RATIO_FIRST_EPOCH),
            row.get(K.TRAIN_RATIO_FIRST_EPOCH_MAXDEV),
        )
        bad_mean = is_number(ratio) and not abs(float(ratio) - 1.0) <= RATIO_MEAN_TOL
        bad_dev = is_number(maxdev) and not float(maxdev) <= RATIO_MAXDEV_TOL
        if bad_mean or bad_dev:
            self.ratio_off_steps += 1
            if self.ratio_off is None:
                self.ratio_off = {
                    "step": step,
                    "ratio_first_epoch": float(ratio) if is_number(ratio) else math.nan,
                    "ratio_first_epoch_maxdev": float(maxdev) if is_number(maxdev) else math.nan,
                }

    def _record_evals(self, row: dict[str, Any], step: int) -> None:
        # match scores (eval/<opponent>/score over eval/<opponent>/games) and benchmark
        # proportions (eval/<set>/<metric> with _lo/_hi, over eval/<set>/n items)
        for key, value in row.items():
            if not (key.startswith(K.EVAL_PREFIX) and key.count("/") == 2 and is_number(value)):
                continue
            _, group, metric = key.split("/")
            if metric == "score":
                name, trials = group, row.get(K.eval_key(group, "games"))
            elif f"{key}_lo" in row and f"{key}_hi" in row:
                name, trials = f"{group}/{metric}", row.get(K.eval_key(group, "n"))
            else:
                continue
            if not is_number(trials) or int(trials) <= 0:
                continue
            self._evals.setdefault(name, []).append((step, float(value), int(trials)))


def is_number(x: Any) -> TypeGuard[float]:
    """A real number; JSON true/false count as 1/0 (acted, at_bound)."""
    return isinstance(x, numbers.Real)
