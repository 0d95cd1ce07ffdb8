"""Group rollouts: R roots x G trajectories x T plies as one ``[R, G, T]`` TensorDict.

Built on TorchRL's env machinery (``env.reset``, ``env.step``, ``step_mdp``); actions come
from :func:`chessrl.policy.log_probs` at the rollout temperature, or from the game's engine
for a fixed opponent and for teacher-forced plies. Keys are listed in docs/rollouts.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs.utils import step_mdp

from chessrl.env import BoardGameEnv
from chessrl.policy import log_probs, sample


@dataclass
class RolloutTimes:
    policy: float = 0.0
    env: float = 0.0


def collect(
    env: BoardGameEnv,
    policy: torch.nn.Module,
    *,
    plies: int,
    temperature: float,
    opponent: str = "self",
    train_plies: str = "root",
    teacher_forcing_prob: float = 0.0,
    teacher_forcing_depth: int = 0,
    generator: torch.Generator | None = None,
    times: RolloutTimes | None = None,
    score: str = "every_ply",
    expert_members: int = 0,
) -> TensorDict:
    """Play ``plies`` plies on every board of ``env`` (batch ``[R, G]``) and stack them.

    Teacher forcing flips one coin per trajectory: a forced trajectory's first
    ``teacher_forcing_depth`` opponent plies are the engine's moves. Engine plies (forced or
    a fixed opponent's) and plies after the game ended are masked out of the loss.

    ``expert_members = k``: the first ``k`` members of every group play the engine's move at the
    root instead of a sampled one, and that ply is trained like a sampled one (its
    ``sample_log_prob`` is the policy's own log-prob of the move, so the first ratio is still 1):
    the group's comparison always includes the engine's choice.

    ``score = "last"`` asks the reward engine for the final position of each trajectory only
    (results by the rules are still exact at every ply); ``reward``/``value`` of the earlier
    plies are 0 and the last played ply of a live trajectory carries the final value as both.
    That is all ``returns = "terminal"`` reads.
    """
    if score not in ("every_ply", "last"):
        raise ValueError(f"score must be 'every_ply' or 'last', not {score!r}")
    times = times or RolloutTimes()
    device = env.device
    env.score_plies = score == "every_ply"
    td = env.reset()
    B = env.batch_size
    root_player = td["to_play"].clone()
    root_value = td["value"].squeeze(-1).clone()
    coin = torch.rand(
        B, generator=generator, device=generator.device if generator is not None else "cpu"
    )
    forced_traj = (
        (coin < teacher_forcing_prob).to(device)
        if teacher_forcing_prob > 0
        else torch.zeros(B, dtype=torch.bool, device=device)
    )
    opp_plies_done = torch.zeros(B, dtype=torch.long, device=device)
    steps: list[TensorDictBase] = []
    pdev = next(policy.parameters()).device  # one batched transfer per ply, never per board
    for _ in range(plies):
        active = ~td["done"].squeeze(-1)
        t0 = time.perf_counter()
        with torch.no_grad():
            lp = log_probs(
                policy,
                td["observation"].reshape(-1, td["observation"].shape[-1]).to(pdev),
                td["action_mask"].reshape(-1, td["action_mask"].shape[-1]).to(pdev),
                temperature,
            )
            action = sample(lp, generator).to(device)
            lp = lp.to(device)
        times.policy += time.perf_counter() - t0
        action = action.reshape(B)
        mover_is_root = td["to_play"] == root_player
        opp = ~mover_is_root & active
        engine_ply = opp & (
            (opponent == "engine") | (forced_traj & (opp_plies_done < teacher_forcing_depth))
        )
        rows = np.flatnonzero(engine_ply.reshape(-1).cpu().numpy())
        if rows.size:
            t0 = time.perf_counter()
            eng = torch.as_tensor(env.engine_actions(rows), device=device)
            times.env += time.perf_counter() - t0
            action.view(-1)[torch.as_tensor(rows, device=device)] = eng
        if expert_members and not steps:  # the root ply: the first k members take the engine's move
            lead = torch.zeros(B, dtype=torch.bool, device=device)
            lead[..., : min(expert_members, B[-1])] = True
            rows = np.flatnonzero((lead & active).reshape(-1).cpu().numpy())
            if rows.size:
                t0 = time.perf_counter()
                eng = torch.as_tensor(env.engine_actions(rows), device=device)
                times.env += time.perf_counter() - t0
                action.view(-1)[torch.as_tensor(rows, device=device)] = eng
            expert = lead & active
        else:
            expert = torch.zeros(B, dtype=torch.bool, device=device)
        opp_plies_done += opp.long()
        td["action"] = action
        td["sample_log_prob"] = lp.gather(-1, action.reshape(-1, 1)).reshape(B)
        td["valid"] = active
        td["mover_is_root"] = mover_is_root
        td["engine_ply"] = engine_ply
        td["expert_ply"] = expert
        trained = active & ~engine_ply & (mover_is_root | (train_plies == "both"))
        td["loss_mask"] = trained
        t0 = time.perf_counter()
        td = env.step(td)
        times.env += time.perf_counter() - t0
        steps.append(td)
        td = step_mdp(td, keep_other=False, exclude_action=True)
    out: TensorDict = torch.stack(steps, dim=len(B))  # tensordict's stack: a TensorDict
    if score == "last":
        t0 = time.perf_counter()
        rows, final = env.final_values()
        times.env += time.perf_counter() - t0
        if rows.size:
            flat = out.reshape(-1, plies)
            played = flat["valid"][torch.as_tensor(rows)]
            idx = torch.arange(plies).expand_as(played)
            last = torch.where(played, idx, torch.full_like(idx, -1)).max(-1).values
            r = torch.as_tensor(rows)
            value = torch.as_tensor(final, dtype=torch.float32, device=out.device)
            flat["next", "value"][r, last, 0] = value
            flat["next", "reward"][r, last, 0] = value
            out = flat.reshape(*B, plies)
    out["root_player"] = root_player.unsqueeze(-1).expand(*B, plies).clone()
    out["root_value"] = root_value.unsqueeze(-1).expand(*B, plies).clone()
    out["forced_traj"] = forced_traj.unsqueeze(-1).expand(*B, plies).clone()
    return out
