"""l2_init: pull the policy's trainable weights towards their values at the start of training.

A third-party chessrl regulariser, installed as its own package (``chessrl-l2-init``) and
found through the ``chessrl`` entry-point group. It adds the term
``coef * sum_i ||w_i - w0_i||^2`` over the trainable parameters, with ``w0`` copied when
training starts. It overrides the typed methods of ``Regulariser`` (``train_start``,
``loss_terms``, ``report``, ``state_dict``, ``load_state_dict``); the base class implements the
``chessrl_*`` hooks by calling them. Enable it with::

    [plugins.l2_init]
    coef = 1e-3
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from chessrl import hookimpl
from chessrl.regularisers import Coefficients, LossTerm, PluginReport, Regulariser, RunView
from chessrl.schema import opt

if TYPE_CHECKING:  # imported where used: every chessrl command imports this module when it starts
    import torch
    from tensordict import TensorDict

__version__ = "0.1.0"
COEFFICIENT = "l2_init"


@dataclass
class L2InitConfig:
    coef: float = opt(1e-3, "Weight of the term: the loss gets coef * sum((w - w0)^2).", ge=0.0)


class L2Init(Regulariser):
    """Declares the coefficient ``l2_init``; its term is the squared distance to the initial
    weights."""

    Config = L2InitConfig

    def __init__(self, name: str, config: L2InitConfig, coefs: Coefficients) -> None:
        super().__init__(name, config, coefs)
        coefs.declare(COEFFICIENT, config.coef, owner=name, min=0.0)
        self.anchor: dict[str, torch.Tensor] = {}  # parameter name -> its initial value
        self.params: list[tuple[str, torch.nn.Parameter]] = []
        self._last: torch.Tensor | None = None

    def train_start(self, run: RunView) -> None:
        """Copies the trainable parameters; after a resume the checkpointed copy is kept."""
        self.params = [(n, p) for n, p in run.policy.named_parameters() if p.requires_grad]
        if not self.anchor:
            self.anchor = {n: p.detach().clone() for n, p in self.params}
        else:  # restored from a checkpoint (on the CPU)
            devices = {n: p.device for n, p in self.params}
            self.anchor = {n: t.to(devices.get(n, t.device)) for n, t in self.anchor.items()}

    def loss_terms(self, out: TensorDict, batch: TensorDict) -> LossTerm:
        """The term ``raw = sum((w - w0)^2)``, differentiable in the policy's parameters."""
        if not self.params:
            raise RuntimeError("train_start was not called: no initial weights to compare with")
        raw = sum(((p - self.anchor[n].to(p.device)) ** 2).sum() for n, p in self.params)
        self._last = raw.detach()
        return LossTerm(name=self.name, coef=self.coefs.get(COEFFICIENT), raw=raw)

    def report(self, metrics: Mapping[str, float], step: int) -> PluginReport:
        """Reports the squared distance (``sq_dist``) and the coefficient."""
        sq = float(self._last) if self._last is not None else 0.0
        return PluginReport(metrics={"sq_dist": sq, "coef": self.coefs.get(COEFFICIENT)})

    # The anchor is checkpointed: a resumed run must keep pulling towards the weights of the
    # original start, not towards the weights it resumed from.
    def state_dict(self) -> dict:
        return {"anchor": {n: t.cpu() for n, t in self.anchor.items()}}

    def load_state_dict(self, state: dict) -> None:
        import torch

        self.anchor = {n: torch.as_tensor(t) for n, t in state.get("anchor", {}).items()}


@hookimpl
def chessrl_register_regularisers(register) -> None:
    register("l2_init", L2Init)
