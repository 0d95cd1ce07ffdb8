"""kl_penalty: a KL penalty with a fixed coefficient (coefficient ``kl``).

``reference = "initial"`` penalises KL(pi || pi_ref) against the policy at the start of
training (the instance sets ``needs_reference = True`` so the trainer computes
``kl_ref_*``); ``reference = "old"`` penalises KL(pi_old || pi) against the policy that
sampled the rollout (``kl_old_*``), which is ~0 on the first epoch when the old policy is
synced every step. ``estimator`` picks the exact KL over legal moves or the sampled k1 / k3
estimates. The coefficient is fixed unless a controller (``adaptive_kl``) sets it.
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

COEFFICIENT = "kl"


@dataclass
class KLPenaltyConfig:
    coef: float = opt(0.001, "Weight of the penalty: the loss gets coef * KL.", ge=0.0)
    estimator: str = opt(
        "exact",
        "'exact': KL over legal moves; 'k1': mean log-ratio of the "
        "sampled moves; 'k3': mean (r - 1) - log r (unbiased, non-negative).",
        choices=("exact", "k1", "k3"),
    )
    reference: str = opt(
        "initial",
        "'initial': KL to the policy at the start of training; "
        "'old': KL to the policy that sampled the rollout.",
        choices=("initial", "old"),
    )


class KLPenalty(Regulariser):
    """Adds ``coef * KL``; declares the coefficient ``kl`` (bounds [0, inf))."""

    Config = KLPenaltyConfig

    def __init__(self, name: str, config: KLPenaltyConfig, coefs: Coefficients) -> None:
        super().__init__(name, config, coefs)
        # per instance: the trainer computes reference log-probs only when some plugin asks
        self.needs_reference = config.reference == "initial"
        self.key = f"kl_{'ref' if self.needs_reference else 'old'}_{config.estimator}"
        coefs.declare(COEFFICIENT, config.coef, owner=name, min=0.0)
        self._last: torch.Tensor | None = None

    def loss_terms(self, out: TensorDict, batch: TensorDict) -> LossTerm:
        """The term ``raw = KL`` (``out[self.key]``), differentiable."""
        if self.key not in out.keys():
            # the trainer did not honour needs_reference: a core bug, not a user mistake
            raise KeyError(
                f"loss output has no '{self.key}' (keys: {', '.join(sorted(out.keys()))})"
            )
        kl = out[self.key]
        self._last = kl.detach()
        return LossTerm(name=self.name, coef=self.coefs.get(COEFFICIENT), raw=kl)

    def report(self, metrics: Mapping[str, float], step: int) -> PluginReport:
        """Reports the KL the term saw (last PPO epoch, as the budget) and its coefficient."""
        raw = metrics.get(f"budget/{self.name}/raw")
        if raw is None:
            raw = float(self._last) if self._last is not None else math.nan
        return PluginReport(metrics={"kl": float(raw), "coef": self.coefs.get(COEFFICIENT)})


@hookimpl
def chessrl_register_regularisers(register) -> None:
    register("kl_penalty", KLPenalty)
