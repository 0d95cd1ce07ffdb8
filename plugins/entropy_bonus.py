"""entropy_bonus: a fixed bonus on the policy's entropy (coefficient ``entropy``).

The term is minimised, so its raw value is ``-entropy`` and the trainer adds
``coef * (-entropy)`` to the loss. ``estimator = "exact"`` uses the entropy of the policy over
legal moves (``out["entropy"]``); ``"sample"`` uses the mean surprisal of the sampled moves
(``out["entropy_sample"]``), the estimate the analysed chess run used. The coefficient is
declared here and may be changed by a controller such as ``entropy_floor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from chessrl import hookimpl
from chessrl.regularisers import Coefficients, LossTerm, PluginReport, Regulariser
from chessrl.schema import opt

if TYPE_CHECKING:  # torch is imported by the code that runs a step; the CLI starts without it
    import torch
    from tensordict import TensorDict

COEFFICIENT = "entropy"
_OUT_KEY = {"exact": "entropy", "sample": "entropy_sample"}


@dataclass
class EntropyBonusConfig:
    coef: float = opt(0.01, "Weight of the bonus: the loss gets coef * (-entropy).", ge=0.0)
    estimator: str = opt(
        "exact",
        "'exact': policy entropy over legal moves; 'sample': mean "
        "surprisal -log pi(a|s) of the sampled moves.",
        choices=("exact", "sample"),
    )


class EntropyBonus(Regulariser):
    """Adds ``coef * (-H)``; declares the coefficient ``entropy`` (bounds [0, inf))."""

    Config = EntropyBonusConfig

    def __init__(self, name: str, config: EntropyBonusConfig, coefs: Coefficients) -> None:
        super().__init__(name, config, coefs)
        coefs.declare(COEFFICIENT, config.coef, owner=name, min=0.0)
        self._last: torch.Tensor | None = None  # detached, read at step end (no sync per epoch)

    def loss_terms(self, out: TensorDict, batch: TensorDict) -> LossTerm:
        """The term ``raw = -entropy`` under the configured estimator, differentiable."""
        entropy = out[_OUT_KEY[self.config.estimator]]
        self._last = entropy.detach()
        return LossTerm(name=self.name, coef=self.coefs.get(COEFFICIENT), raw=-entropy)

    def report(self, metrics: Mapping[str, float], step: int) -> PluginReport:
        """Reports the entropy the term saw (last PPO epoch, as the budget) and its coefficient."""
        raw = metrics.get(f"budget/{self.name}/raw")
        if raw is not None:
            entropy = -float(raw)
        else:
            entropy = float(self._last) if self._last is not None else math.nan
        return PluginReport(metrics={"entropy": entropy, "coef": self.coefs.get(COEFFICIENT)})


@hookimpl
def chessrl_register_regularisers(register) -> None:
    register("entropy_bonus", EntropyBonus)
