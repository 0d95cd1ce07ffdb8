"""entropy_floor: a monitor that acts when the entropy stays below a floor.

Each step it reads ``metrics[metric]`` (default ``train/entropy``, the exact policy entropy).
After ``patience`` consecutive steps below ``floor`` it *fires*:

* ``action = "boost"``: multiplies the coefficient ``entropy`` (declared by ``entropy_bonus``)
  by ``boost_factor``, capped at ``max_coef``; never lowers it.
* ``action = "warn"``: the report carries a one-line message for the trainer to print.
* ``action = "stop"``: the report asks the trainer to stop, with the reason.

The counter of consecutive low steps resets to 0 when it fires, so it fires at most once per
``patience`` steps: a boost gets ``patience`` steps to take effect before the next one, and a
warning is not repeated every step. A step at or above the floor also resets the counter.
The analysed run's monitor never fired in 6,800 steps (floor 1.5, entropy 2.6-3.1): its
``times_fired`` and ``acted`` make that visible as a dead plugin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

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

COEFFICIENT = "entropy"


@dataclass
class EntropyFloorConfig:
    floor: float = opt(1.0, "Entropy (nats) below which a step counts as low.", ge=0.0)
    patience: int = opt(5, "Consecutive low steps before the monitor fires.", ge=1)
    action: str = opt(
        "boost",
        "'boost': raise the entropy coefficient; 'warn': print a warning; 'stop': stop training.",
        choices=("boost", "warn", "stop"),
    )
    boost_factor: float = opt(1.5, "Boost: the entropy coefficient is multiplied by this.", gt=1.0)
    max_coef: float = opt(0.1, "Boost: the entropy coefficient is never raised above this.", gt=0.0)
    metric: str = opt(K.TRAIN_ENTROPY, "The metrics key holding the entropy to watch.")


class EntropyFloor(Regulariser):
    """Monitor (warn / stop) or controller (boost) of the coefficient ``entropy``."""

    Config = EntropyFloorConfig

    def __init__(self, name: str, config: EntropyFloorConfig, coefs: Coefficients) -> None:
        super().__init__(name, config, coefs)
        self.consecutive_low = 0
        self.times_fired = 0
        self._entropy = math.nan
        self._fired = False
        self._message: str | None = None

    def train_start(self, run: RunView) -> None:
        """Boost only: fails unless ``entropy`` is declared, positive and not above
        ``max_coef``."""
        if self.config.action != "boost":
            return  # warn / stop only read a metric the loss always computes
        require_coefficient(
            self.coefs,
            COEFFICIENT,
            self.name,
            f"enable [plugins.entropy_bonus] or set plugins.{self.name}.action = 'warn'",
        )
        coef = self.coefs.get(COEFFICIENT)
        if coef == 0.0:
            raise UserError(
                f"plugins.{self.name}: coefficient 'entropy' is 0 and a boost "
                "multiplies it; set plugins.entropy_bonus.coef > 0"
            )
        if coef > self.config.max_coef:
            raise UserError(
                f"plugins.{self.name}: max_coef = {self.config.max_coef} is below "
                f"the entropy coefficient {coef}, so a boost could never raise it; "
                "raise max_coef"
            )

    def adjust_coefficients(self, metrics: Mapping[str, float], step: int) -> None:
        """Counts consecutive low steps and fires after ``patience`` of them (boosting in boost
        mode)."""
        cfg, coefs = self.config, self.coefs
        self._entropy = entropy = metric_value(metrics, cfg.metric, self.name)
        self._fired, self._message = False, None
        # a NaN entropy is not evidence of a low entropy: it counts as not low
        self.consecutive_low = self.consecutive_low + 1 if entropy < cfg.floor else 0
        if self.consecutive_low < cfg.patience:
            return
        self._fired, self.consecutive_low = True, 0
        self.times_fired += 1
        steps = "step" if cfg.patience == 1 else "steps"
        what = f"entropy {entropy:.4g} < floor {cfg.floor:g} for {cfg.patience} {steps}"
        if cfg.action == "boost":
            before = coefs.get(COEFFICIENT)
            # the cap is never below the current value: a boost must not lower the coefficient
            after = coefs.set(
                COEFFICIENT, before * cfg.boost_factor, by=self.name, max=max(cfg.max_coef, before)
            )
            self._message = f"{what}; entropy coefficient {before:.4g} -> {after:.4g}"
        elif cfg.action == "warn":
            self._message = f"{what} (warning only)"
        else:
            self._message = f"{what}; stopping"

    def report(self, metrics: Mapping[str, float], step: int) -> PluginReport:
        """Reports entropy, below_floor, consecutive_low_steps, times_fired and (boost) coef.

        Declares the ``floor`` of the watched metric and, when boosting, ``max_coef`` as the
        coefficient's upper bound.
        """
        cfg = self.config
        m = {
            "entropy": self._entropy,
            "below_floor": float(self._entropy < cfg.floor),
            "consecutive_low_steps": float(self.consecutive_low),
            "times_fired": float(self.times_fired),
        }
        at_bound = None
        if COEFFICIENT in self.coefs:
            m["coef"] = self.coefs.get(COEFFICIENT)
        fired, self._fired = self._fired, False
        if cfg.action == "boost" and COEFFICIENT in self.coefs:
            # a boost capped at max_coef is saturation; a monitor that never fired is not
            # saturated, merely dead, whatever the coefficient someone else set
            at_bound = fired and self.coefs.get(COEFFICIENT) >= cfg.max_coef * (1 - 1e-9)
        boosts = "coef" in m and cfg.action == "boost"
        return PluginReport(
            metrics=m,
            acted=fired,
            at_bound=at_bound,
            stop=self._message if fired and cfg.action == "stop" else None,
            message=self._message if fired else None,
            floors={cfg.metric: cfg.floor},
            bounds={"coef": (None, cfg.max_coef)} if boosts else {},
        )

    def state_dict(self) -> dict:
        return {"consecutive_low": self.consecutive_low, "times_fired": self.times_fired}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive_low = int(state.get("consecutive_low", 0))
        self.times_fired = int(state.get("times_fired", 0))


@hookimpl
def chessrl_register_regularisers(register) -> None:
    register("entropy_floor", EntropyFloor)
