"""Run health: findings computed from the rows of ``metrics.jsonl`` alone.

The trainer feeds every logged row to a :class:`HealthMonitor` and prints each finding once,
as one line, the step it first appears; ``chessrl report`` replays a run's rows through the
same monitor. The monitor is the run's statistics (:class:`chessrl.runstats.RunStats`) plus
the ordered list of rules (:data:`chessrl.rules.RULES`), each documented under its code in
docs/diagnostics.md with its thresholds (constants of :mod:`chessrl.rules`).
"""

from __future__ import annotations

from typing import Any

from chessrl import keys as K
from chessrl.keys import DECLARED_KINDS, declared_key, parse_declared
from chessrl.rules import (
    CLIP_HIGH,
    DOMINANT_SHARE,
    ENTROPY_COLLAPSE_FRAC,
    ENTROPY_DECLINE_DROP,
    ENTROPY_DECLINE_WINDOWS,
    EVAL_ALPHA,
    EVAL_MIN_EVALS,
    EVAL_TREND_MIN_EVALS,
    OPPOSES_COS,
    RATIO_MAXDEV_TOL,
    RATIO_MEAN_TOL,
    RULES,
    SATURATED_FRAC,
    SEVERITIES,
    TREND_MIN_WINDOWS,
    ZERO_STD_FRAC,
    Finding,
    NotEvaluated,
    Rule,
)
from chessrl.runstats import Declared, EvalTrend, KeyStats, PluginSummary, RunStats

__all__ = [
    "Finding",
    "NotEvaluated",
    "HealthMonitor",
    "PluginSummary",
    "KeyStats",
    "Declared",
    "EvalTrend",
    "Rule",
    "RULES",
    "DECLARED_KINDS",
    "declared_key",
    "parse_declared",
    "eval_key",
    "OBJECTIVE",
    "ENTROPY_KEY",
    "RETURN_KEY",
    "SATURATED_FRAC",
    "DOMINANT_SHARE",
    "OPPOSES_COS",
    "CLIP_HIGH",
    "RATIO_MEAN_TOL",
    "RATIO_MAXDEV_TOL",
    "ENTROPY_COLLAPSE_FRAC",
    "ENTROPY_DECLINE_WINDOWS",
    "ENTROPY_DECLINE_DROP",
    "ZERO_STD_FRAC",
    "TREND_MIN_WINDOWS",
    "EVAL_MIN_EVALS",
    "EVAL_TREND_MIN_EVALS",
    "EVAL_ALPHA",
]

# today's names of keys.py's spellings, kept for code written against them
OBJECTIVE = K.OBJECTIVE
ENTROPY_KEY = K.TRAIN_ENTROPY
RETURN_KEY = K.ROLLOUT_RETURN_MEAN
eval_key = K.eval_series_key


class HealthMonitor(RunStats):
    """Turns metric rows into :class:`Finding` objects: the run's statistics, judged after
    every row by each rule of ``rules`` (default :data:`chessrl.rules.RULES`), in order.

    ``window`` is ``trainer.health_window``: window rules look at the values logged in the
    last ``window`` steps and wait until ``window`` steps have been seen. Bounds, targets and
    floors come from what the plugins declare, never from option names; findings never
    depend on them, only messages.
    """

    def __init__(
        self,
        window: int,
        plugin_kinds: dict[str, str] | None = None,
        rules: list[Rule] | None = None,
    ) -> None:
        super().__init__(window, plugin_kinds)
        self.rules = list(RULES if rules is None else rules)
        self._current: list[Finding] = []
        self._raised: dict[tuple[str, str, str], Finding] = {}

    def update(self, row: dict[str, Any]) -> list[Finding]:
        """Take one metrics row; return the findings that appear for the first time."""
        if not self.add(row):
            return []
        order = {s: i for i, s in enumerate(SEVERITIES)}
        found = [f for r, subject in self._checks() for f in r.check(r, self, subject)]
        self._current = sorted(found, key=lambda f: order.get(f.severity, len(order)))
        new = [f for f in self._current if f.key not in self._raised]
        for f in new:
            self._raised[f.key] = f
        return new

    def findings(self) -> list[Finding]:
        """All findings that hold after the last row, most severe first."""
        return list(self._current)

    def raised(self) -> list[Finding]:
        """Every finding ever reported, as first reported (including ones that no longer hold)."""
        return list(self._raised.values())

    def not_evaluated(self) -> list[NotEvaluated]:
        """The rules that could not run on the rows seen so far, each with what it needs.

        "No findings" means something only next to this list: a 40-step run with a 50-step
        window has run none of the window rules. Rules whose metrics a run never logs (no
        plugin logs ``acted``) are not listed; rules that wait for a window, for windows of a
        metric or for evaluations are, with the numbers (needs 50 steps, run has 40).
        """
        waiting = [n for r, subject in self._checks() for n in r.waiting(r, self, subject)]
        return list(dict.fromkeys(waiting))

    def _checks(self) -> list[tuple[Rule, str]]:
        """(rule, subject) pairs in report order: consecutive rules of one scope are run
        subject by subject (a plugin's ``dead`` and ``saturated`` together)."""
        out: list[tuple[Rule, str]] = []
        i = 0
        while i < len(self.rules):
            scope = self.rules[i].scope
            j = i
            while j < len(self.rules) and self.rules[j].scope == scope:
                j += 1
            for subject in self._subjects(scope):
                out += [(r, subject) for r in self.rules[i:j]]
            i = j
        return out

    def _subjects(self, scope: str) -> list[str]:
        if scope == "plugin":
            return self.plugin_names()
        if scope == "term":
            return [t for t in self.budget_terms() if t != K.OBJECTIVE]
        return [""]
