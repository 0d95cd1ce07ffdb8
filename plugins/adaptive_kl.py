"""adaptive_kl: a controller that steers the coefficient ``kl`` towards a KL target.

It adds no loss term; it needs an enabled plugin that declares ``kl`` (``kl_penalty``),
checked at train start. After each optimiser step it reads the KL from ``metrics[metric]``
and sets the coefficient for the next step:

* ``rule = "multiplicative"`` (the analysed chess run): ``coef * rate`` if KL > target, else
  ``coef / rate``.
* ``rule = "proportional"`` (Ziegler et al. 2019): ``e = clip(KL / target - 1, -0.2, 0.2)``,
  ``coef * (1 + e * n / horizon)`` with ``n`` the batch size of the step.

Either way the result is clamped to ``[min, max]``. The report's ``at_bound`` says when the
coefficient sits at a bound: the analysed run's controller hit its max within ~30 steps and
stayed there for 6,300 steps, acting as a large constant penalty that nobody noticed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from chessrl import hookimpl
from chessrl import keys as K
from chessrl.errors import UserError
from chessrl.regularisers import (
    Coefficients,
    PluginReport,
    Regulariser,
    RunView,
    metric_value,
    require_coefficient,
)
from chessrl.schema import opt

COEFFICIENT = "kl"
TRAINED_PLIES = K.ROLLOUT_TRAINED_PLIES
_E_CLIP = 0.2  # Ziegler et al.'s clip on the proportional error


@dataclass
class AdaptiveKLConfig:
    target: float = opt(0.01, "Target KL per trained ply (in the units of `metric`).", gt=0.0)
    rule: str = opt(
        "proportional",
        "'proportional': Ziegler et al.'s rule; 'multiplicative': "
        "coef * rate above the target, coef / rate below (the analysed run's rule).",
        choices=("proportional", "multiplicative"),
    )
    rate: float = opt(1.5, "Multiplicative rule: factor per step.", gt=1.0)
    horizon: int = opt(
        10000,
        "Proportional rule: the horizon (in samples) over which the error is corrected.",
        ge=1,
    )
    batch_size: int = opt(
        0, f"Proportional rule: n, samples per step; 0 = metrics['{TRAINED_PLIES}'].", ge=0
    )
    min: float = opt(1e-5, "Smallest coefficient the controller sets.", ge=0.0)
    max: float = opt(1.0, "Largest coefficient the controller sets.", gt=0.0)
    metric: str = opt(
        "budget/kl_penalty/raw",
        "The metrics key holding the KL to control "
        "(default: the kl_penalty term's raw value, last PPO epoch).",
    )
    init: float | None = opt(
        None, "Starting coefficient, set at train start (unset = keep kl_penalty's coef).", ge=0.0
    )

    def __post_init__(self) -> None:
        if self.min > self.max:
            raise ValueError(f"min = {self.min} exceeds max = {self.max}")
        if self.init is not None and not (self.min <= self.init <= self.max):
            raise ValueError(f"init = {self.init} is outside [min, max] = [{self.min}, {self.max}]")


class AdaptiveKL(Regulariser):
    """Controller of ``kl``. Stateless apart from whether ``init`` was applied."""

    Config = AdaptiveKLConfig

    def __init__(self, name: str, config: AdaptiveKLConfig, coefs: Coefficients) -> None:
        super().__init__(name, config, coefs)
        self.initialised = False
        self._kl = math.nan
        self._acted = False

    def train_start(self, run: RunView) -> None:
        """Fails if no plugin declares ``kl`` or it would stay stuck at 0; applies ``init``
        once."""
        require_coefficient(self.coefs, COEFFICIENT, self.name, "enable [plugins.kl_penalty]")
        if not self.initialised and self.config.init is not None:
            self.coefs.set(COEFFICIENT, self.config.init, by=self.name)
        self.initialised = True  # a resumed run keeps its checkpointed coefficient
        if self.coefs.get(COEFFICIENT) == 0.0:
            raise UserError(
                f"plugins.{self.name}: coefficient 'kl' starts at 0, where both "
                f"rules keep it; set plugins.kl_penalty.coef or "
                f"plugins.{self.name}.init > 0"
            )

    def next_coef(self, coef: float, kl: float, metrics: Mapping[str, Any]) -> float:
        """The coefficient the configured rule gives for this step's KL (before clamping)."""
        cfg = self.config
        if cfg.rule == "multiplicative":
            return coef * cfg.rate if kl > cfg.target else coef / cfg.rate
        e = min(max(kl / cfg.target - 1.0, -_E_CLIP), _E_CLIP)
        n = cfg.batch_size or metric_value(metrics, TRAINED_PLIES, self.name)
        return coef * (1.0 + e * n / cfg.horizon)

    def adjust_coefficients(self, metrics: Mapping[str, float], step: int) -> None:
        """Sets ``kl`` from this step's KL, clamped to ``[min, max]``; skips a non-finite KL."""
        kl = metric_value(metrics, self.config.metric, self.name)
        self._kl = kl
        coefs = self.coefs
        before = coefs.get(COEFFICIENT)
        if not math.isfinite(kl):
            self._acted = False  # a NaN KL must not drive the coefficient to a bound
            return
        after = coefs.set(
            COEFFICIENT,
            self.next_coef(before, kl, metrics),
            by=self.name,
            min=self.config.min,
            max=self.config.max,
        )
        self._acted = after != before

    def report(self, metrics: Mapping[str, float], step: int) -> PluginReport:
        """Reports coef, kl, kl_ratio; ``acted`` = the coefficient changed, ``at_bound`` = it
        sits at a bound.

        Declares the coefficient's bounds ``[min, max]`` and the KL's ``target`` for the report.
        """
        coef = self.coefs.get(COEFFICIENT)
        at_bound = (
            math.isclose(coef, self.config.min, rel_tol=1e-9, abs_tol=1e-12)
            or math.isclose(coef, self.config.max, rel_tol=1e-9, abs_tol=1e-12)
            or self.coefs[COEFFICIENT].at_bound()
        )
        acted, self._acted = self._acted, False
        message = None
        if not math.isfinite(self._kl):
            message = f"{self.name}: KL is {self._kl}; coefficient 'kl' left at {coef}"
        return PluginReport(
            metrics={"coef": coef, "kl": self._kl, "kl_ratio": self._kl / self.config.target},
            acted=acted,
            at_bound=at_bound,
            message=message,
            bounds={"coef": (self.config.min, self.config.max)},
            targets={"kl": self.config.target},
        )

    def state_dict(self) -> dict:
        return {"initialised": self.initialised}

    def load_state_dict(self, state: dict) -> None:
        self.initialised = bool(state.get("initialised", self.initialised))


@hookimpl
def chessrl_register_regularisers(register) -> None:
    register("adaptive_kl", AdaptiveKL)
