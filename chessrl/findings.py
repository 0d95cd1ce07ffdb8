"""What a health rule is and what it says: :class:`Rule`, :class:`Finding`, :class:`NotEvaluated`.

The rules themselves are the ordered list :data:`chessrl.rules.RULES`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from chessrl.runstats import RunStats

__all__ = ["Rule", "Finding", "NotEvaluated", "SEVERITIES", "SCOPES", "fmt"]

SEVERITIES = ("error", "warning", "info")
SCOPES = ("plugin", "term", "run")
DOCS_PAGE = "docs/diagnostics.md"


@dataclass(frozen=True)
class NotEvaluated:
    """A health rule that could not run on this run (yet), and why."""

    code: str
    subject: str
    reason: str

    def line(self) -> str:
        if self.subject:
            return f"`{self.code}` ({self.subject}): {self.reason}"
        return f"`{self.code}`: {self.reason}"


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


Check = Callable[["Rule", "RunStats", str], list[Finding]]
Waiting = Callable[["Rule", "RunStats", str], list[NotEvaluated]]


@dataclass
class Rule:
    """One health rule. ``severity`` is the one its findings have (``eval_trend`` raises a
    warning instead when declining); ``scope`` says what ``subject`` its functions get: a
    plugin name ("plugin"), a loss term ("term") or "" ("run")."""

    code: str
    severity: str
    scope: str
    check: Check
    waiting: Waiting = lambda rule, s, subject: []  # noqa: E731

    @property
    def anchor(self) -> str:
        """Where the rule is documented."""
        return f"{DOCS_PAGE}#{self.code}"

    def finding(
        self,
        s: RunStats,
        subject: str,
        message: str,
        numbers: dict[str, Any],
        state: str = "",
        severity: str | None = None,
    ) -> Finding:
        return Finding(
            self.code, severity or self.severity, message, subject, numbers, s.last_step, state
        )

    def not_evaluated(
        self, subject: str, needs: int, has: int, what: str = "steps"
    ) -> NotEvaluated:
        return NotEvaluated(self.code, subject, f"needs {needs} {what}, run has {has}")

    def waits(self, fn: Waiting) -> Waiting:
        """Decorator: set the function that says why the rule could not run yet."""
        self.waiting = fn
        return fn


def fmt(x: float | None, spec: str = ".4g") -> str:
    """A number in a finding's message ("n/a" for None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)
