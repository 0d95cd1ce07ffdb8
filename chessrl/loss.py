"""GroupPolicyLoss: the PPO-clip objective over group-relative advantages, a TorchRL LossModule.

The input TensorDict has one batch dim over plies (``[N]``: the trainer flattens ``[R, G, T]``
and keeps the trained plies). The output TensorDict holds, as TorchRL's own losses do,

- ``loss_*`` scalars (:data:`LOSS_KEYS`; plugins add ``loss_<name>``): the loss to minimise is
  their sum, :func:`total_loss`, and nothing else is summed;
- diagnostic scalars (:data:`DIAGNOSTIC_KEYS`), logged as ``train/<key>``;
- per-ply tensors (:data:`PLY_KEYS`) that regularisers build their terms from.

docs/loss.md lists every key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from chessrl.policy import log_probs
from chessrl.regularisers import masked_mean


def exact_kl(logp: torch.Tensor, logq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row over legal actions (``mask``), from log-probs [N, A]."""
    # zero the illegal entries *before* multiplying: 0 * -inf would put NaN in the gradient
    zero = torch.zeros_like(logp)
    lp, lq = torch.where(mask, logp, zero), torch.where(mask, logq, zero)
    return (lp.exp() * mask * (lp - lq)).sum(-1)


def exact_entropy(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy per row of the distribution ``logp`` [N, A] over legal actions."""
    lp = torch.where(mask, logp, torch.zeros_like(logp))  # see exact_kl
    return -(lp.exp() * mask * lp).sum(-1)


class GroupPolicyLoss(LossModule):
    """PPO-clip on group-relative advantages, with exact entropy and KL diagnostics.

    ``loss_objective = aggregate(-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A))`` with
    ``r = exp(log pi(a|s) - log pi_old(a|s))`` computed by :func:`chessrl.policy.log_probs`.
    ``aggregation='token-mean'`` averages over the plies that count; ``'seq-mean'`` averages
    within each trajectory first (key ``traj_index``), then over trajectories.

    Masking: the plies that count are the input's ``loss_mask`` entry (all plies when it is
    absent); :attr:`loss_mask_key` names it, and the token mean is
    :meth:`LossModule._reduce_loss` with that mask (a select, not a product, so a masked ply's
    numbers never reach the loss or its gradient). Every diagnostic mean uses the same mask.
    The trainer passes its trained plies only (a masked ply would cost a forward and a backward
    for nothing) with ``loss_mask`` all True; a caller may as well pass every ply with a mask.

    Not :class:`torchrl.objectives.llm.GRPOLoss` (token sequences of a language model): here an
    action is one move of a board game, and the group is G games from one root position.
    """

    @dataclass
    class _AcceptedKeys:
        """Input keys; rename with ``set_keys(observation="obs", ...)``.

        observation: int64 [N, L] tokens. action_mask: bool [N, A]. action: int64 [N].
        old_log_probs_all: [N, A] log-probs of the old policy over all actions (the same
        function, no grad). ref_log_probs_all: optional [N, A] log-probs of the reference
        policy. advantage: [N] group-relative advantage. loss_mask: bool [N] plies that count.
        traj_index: int64 [N] trajectory id (for seq-mean aggregation).
        """

        observation: str = "observation"
        action_mask: str = "action_mask"
        action: str = "action"
        old_log_probs_all: str = "old_log_probs_all"
        ref_log_probs_all: str = "ref_log_probs_all"
        advantage: str = "advantage"
        loss_mask: str = "loss_mask"
        traj_index: str = "traj_index"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        policy: torch.nn.Module,
        *,
        temperature: float = 1.0,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        aggregation: str = "token-mean",
    ):
        super().__init__()
        self.policy = policy
        self.temperature = temperature
        self.clip_low, self.clip_high = clip_low, clip_high
        if aggregation not in ("token-mean", "seq-mean"):
            raise ValueError(f"aggregation must be 'token-mean' or 'seq-mean', got {aggregation!r}")
        self.aggregation = aggregation

    @property
    def in_keys(self) -> list[str]:
        """The input entries read (``ref_log_probs_all``, ``loss_mask`` and ``traj_index`` only
        when present)."""
        return [getattr(self.tensor_keys, f) for f in self._AcceptedKeys.__dataclass_fields__]

    @property
    def out_keys(self) -> list[str]:
        """The output entries (``kl_ref_*`` only with ``ref_log_probs_all``; plugins add
        ``loss_<name>``)."""
        return [*LOSS_KEYS, *DIAGNOSTIC_KEYS, *PLY_KEYS]

    @property
    def loss_mask_key(self) -> str:
        """The input entry marking the plies that count: ``tensor_keys.loss_mask``."""
        return self.tensor_keys.loss_mask

    @loss_mask_key.setter
    def loss_mask_key(self, value: str) -> None:
        self.set_keys(loss_mask=value)

    def _loss_mask_keys(self) -> tuple[str, ...]:  # where LossModule._reduce_loss looks
        return (self.tensor_keys.loss_mask,)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass  # GRPO has no value estimator: advantages come from the group

    def _get(self, td: TensorDictBase, field: str, default: object = ...) -> torch.Tensor:
        key = getattr(self.tensor_keys, field)
        return td.get(key) if default is ... else td.get(key, default)

    def aggregate(
        self, per_ply: torch.Tensor, mask: torch.Tensor, traj: torch.Tensor | None
    ) -> torch.Tensor:
        if self.aggregation == "token-mean" or traj is None:
            return self._reduce_loss(per_ply, mask=mask, reduction="mean")
        m = mask.to(per_ply.dtype)
        n_traj = int(traj.max().item()) + 1 if traj.numel() else 0
        zeros = torch.zeros(n_traj, dtype=per_ply.dtype, device=per_ply.device)
        sums = zeros.index_add(0, traj, per_ply * m)
        counts = zeros.index_add(0, traj, m)
        has = counts > 0
        return (sums[has] / counts[has]).mean() if has.any() else per_ply.sum() * 0

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        k = self.tensor_keys
        obs, legal = tensordict.get(k.observation), tensordict.get(k.action_mask)
        action, adv = tensordict.get(k.action), tensordict.get(k.advantage).float()
        old_all = self._get(tensordict, "old_log_probs_all")
        mask = tensordict.get(k.loss_mask, None)
        mask = torch.ones_like(action, dtype=torch.bool) if mask is None else mask
        traj = tensordict.get(k.traj_index, None)

        raw: dict[str, torch.Tensor] = {}
        logp_all = log_probs(self.policy, obs, legal, self.temperature, raw)
        logp = logp_all.gather(-1, action[:, None]).squeeze(-1)
        old = old_all.gather(-1, action[:, None]).squeeze(-1)
        log_ratio = logp - old
        ratio = log_ratio.exp()
        clipped_ratio = ratio.clamp(1 - self.clip_low, 1 + self.clip_high)
        per_ply = -torch.min(ratio * adv, clipped_ratio * adv)
        # clipping binds where the clipped branch is the smaller one and has no gradient
        binds = ((adv > 0) & (ratio > 1 + self.clip_high)) | (
            (adv < 0) & (ratio < 1 - self.clip_low)
        )

        legal_rows = legal.clone()
        legal_rows[~legal_rows.any(-1), 0] = True
        entropy = exact_entropy(logp_all, legal_rows)
        kl_old = exact_kl(old_all, logp_all, legal_rows)
        r = ratio.detach()
        m = mask.to(r.dtype)
        n = m.sum().clamp_min(1.0)
        out = {
            "loss_objective": self.aggregate(per_ply, mask, traj),
            "entropy": masked_mean(entropy, mask),
            "entropy_sample": masked_mean(-logp, mask),
            "kl_old_exact": masked_mean(kl_old, mask),
            "kl_old_k1": masked_mean(-log_ratio, mask),
            "kl_old_k3": masked_mean((ratio - 1) - log_ratio, mask),
            "clip_fraction": masked_mean(binds.float(), mask).detach(),
            "ratio_mean": masked_mean(r, mask),
            "ratio_max": (r * m).max() if mask.any() else r.new_ones(()),
            "ratio_min": (
                torch.where(mask, r, torch.full_like(r, float("inf"))).min()
                if mask.any()
                else r.new_ones(())
            ),
            "ess": ((r * m).sum() ** 2 / (r.pow(2) * m).sum().clamp_min(1e-12) / n),
            "entropy_plies": entropy,
            "log_probs": logp,
            "log_probs_all": logp_all,
            "logits_all": raw["logits"],
            "advantage": adv,
            "mask": mask,
        }
        ref_all = self._get(tensordict, "ref_log_probs_all", None)
        if ref_all is not None:
            ref = ref_all.gather(-1, action[:, None]).squeeze(-1)
            log_r_ref = ref - logp  # samples come from (approximately) the current policy
            out["kl_ref_exact"] = masked_mean(exact_kl(logp_all, ref_all, legal_rows), mask)
            out["kl_ref_k1"] = masked_mean(-log_r_ref, mask)
            out["kl_ref_k3"] = masked_mean(log_r_ref.exp() - 1 - log_r_ref, mask)
        return TensorDict(out, batch_size=[])


#: the loss module's summed entries (plugins add ``loss_<name>`` to the output)
LOSS_KEYS = ("loss_objective",)
#: diagnostic scalars: never summed, logged as ``train/<key>`` (``kl_ref_*`` with a reference)
DIAGNOSTIC_KEYS = (
    "entropy",
    "entropy_sample",
    "kl_old_exact",
    "kl_old_k1",
    "kl_old_k3",
    "clip_fraction",
    "ratio_mean",
    "ratio_max",
    "ratio_min",
    "ess",
    "kl_ref_exact",
    "kl_ref_k1",
    "kl_ref_k3",
)
#: per-ply tensors [N] (``log_probs_all``, ``logits_all`` [N, A]) for regularisers' terms;
#: never summed
PLY_KEYS = ("entropy_plies", "log_probs", "log_probs_all", "logits_all", "advantage", "mask")


def loss_entries(out: TensorDictBase) -> dict[str, torch.Tensor]:
    """The ``loss_*`` entries of a loss output, by term name (``loss_objective`` ->
    ``objective``), in the order they were written: the terms the optimiser sums."""
    return {key[len("loss_") :]: out[key] for key in out.keys() if key.startswith("loss_")}


def total_loss(out: TensorDictBase) -> torch.Tensor:
    """The loss to minimise: the sum of the output's ``loss_*`` entries."""
    return cast(torch.Tensor, sum(loss_entries(out).values()))  # loss_objective: never empty
