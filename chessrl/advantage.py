"""Group-relative advantages.

Definition (docs/loss.md#advantages): for each root ``r`` and player ``p`` (the root player and,
with ``train_plies = "both"``, the other side), the return of trajectory ``g`` is the sum of
that player's per-ply rewards (``returns = "sum"``) or the final position's value from that
player's point of view (``"terminal"``). The advantage is the return minus the mean over the
group members that have at least one trained ply for that player, divided by their
(population) std plus ``eps`` when ``scale = "std"``. ``scale = "rank"`` replaces the centred
return by the member's mean pairwise comparison with the valid members, ``mean_j sign(R_g -
R_j)`` in [-1, 1]: only the order of the returns counts, not their gaps. Members without
trained plies get 0.
Every ply of player ``p`` in trajectory ``g`` carries that advantage.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase


def group_advantages(
    returns: torch.Tensor, valid: torch.Tensor, *, scale: str = "std", eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages ``[..., G]`` from returns ``[..., G]`` over the last (group) dim.

    ``valid`` marks members that count in the group's mean and std; invalid members get
    exactly 0. Returns ``(advantages, zero_spread)`` where ``zero_spread[...]`` is True for
    groups whose valid returns all tie (they carry no learning signal). Finite for G = 1.
    """
    v = valid.to(returns.dtype)
    n = v.sum(-1, keepdim=True)
    mean = (returns * v).sum(-1, keepdim=True) / n.clamp_min(1.0)
    centred = (returns - mean) * v
    var = (centred.pow(2)).sum(-1, keepdim=True) / n.clamp_min(1.0)
    std = var.sqrt()
    hi = torch.where(valid, returns, torch.full_like(returns, -torch.inf)).max(-1).values
    lo = torch.where(valid, returns, torch.full_like(returns, torch.inf)).min(-1).values
    zero_spread = (hi == lo) & (n.squeeze(-1) > 0)  # exact ties, not a float threshold
    if scale == "std":
        adv = centred / (std + eps)
    elif scale == "rank":
        # mean pairwise comparison with the valid members: +1 above all, -1 below all, ties 0
        wins = torch.sign(returns.unsqueeze(-1) - returns.unsqueeze(-2)) * v.unsqueeze(-2)
        adv = wins.sum(-1) / n.clamp_min(1.0) * v
    else:
        adv = centred
    # a tied group carries no signal: its advantages are exactly 0, not rounding noise / eps
    keep = valid & ~zero_spread.unsqueeze(-1)
    return torch.where(keep, adv, torch.zeros_like(adv)), zero_spread


def player_returns(
    reward: torch.Tensor,
    value: torch.Tensor,
    mover_is_root: torch.Tensor,
    played: torch.Tensor,
    root_value: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Returns ``[R, G, 2]`` (root player, other player) from per-ply tensors ``[R, G, T]``.

    ``reward``/``value`` are for the mover of each ply; ``played`` marks plies actually played.
    ``root_value`` [R, G] is the start position's value for the root player (used when no ply
    was played).
    """
    root = mover_is_root & played
    other = ~mover_is_root & played
    if mode == "sum":
        r0 = (reward * root).sum(-1)
        r1 = (reward * other).sum(-1)
        return torch.stack([r0, r1], -1)
    if mode != "terminal":
        raise ValueError(f"unknown return mode {mode!r}")
    T = reward.shape[-1]
    idx = torch.arange(T, device=reward.device).expand_as(reward)
    last = torch.where(played, idx, torch.full_like(idx, -1)).max(-1).values  # [R, G]
    has = last >= 0
    last_c = last.clamp_min(0)[..., None]
    v_last = value.gather(-1, last_c).squeeze(-1)
    sign = torch.where(mover_is_root.gather(-1, last_c).squeeze(-1), 1.0, -1.0)
    final_root = torch.where(has, v_last * sign, root_value)
    return torch.stack([final_root, -final_root], -1)


def rollout_advantages(
    td: TensorDictBase, mode: str, scale: str, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``advantage`` [R, G, T] and ``traj_index`` into a rollout; return
    ``(returns, zero_spread)``.

    ``mode`` is the return definition (config ``advantage.returns``: ``"sum"`` or
    ``"terminal"``, see :func:`player_returns`); the returned ``returns`` tensor is [R, G, 2]
    (root player, other player); ``zero_spread`` is [R, 2].
    """
    mover_root, trained = td["mover_is_root"], td["loss_mask"]
    ret = player_returns(
        td["next", "reward"].squeeze(-1),
        td["next", "value"].squeeze(-1),
        mover_root,
        td["valid"],
        td["root_value"][..., 0],
        mode,
    )
    counts = torch.stack(
        [(trained & mover_root).any(-1), (trained & ~mover_root).any(-1)], -2
    )  # [R, 2, G]
    adv, zero = group_advantages(ret.transpose(-1, -2), counts, scale=scale, eps=eps)
    adv = adv.transpose(-1, -2)  # [R, G, 2]
    td["advantage"] = torch.where(mover_root, adv[..., 0:1], adv[..., 1:2])
    R, G, T = td.batch_size
    td["traj_index"] = torch.arange(R * G).reshape(R, G, 1).expand(R, G, T)
    return ret, zero
