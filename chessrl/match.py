"""Game-agnostic match play: a policy against an opponent, colours alternating.

Game i (0-based) gives the policy the first player's side when i is even and the second
player's when odd; every start position is played once with each colour. A game still running
at the game's ``max_plies`` is adjudicated by the reward engine: the side its value favours by
at least ``adjudicate`` wins, otherwise it is a draw.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from chessrl.env import BoardGameEnv
from chessrl.policy import log_probs, sample


@dataclass
class MatchResult:
    wins: int = 0
    draws: int = 0
    losses: int = 0
    reasons: Counter = field(default_factory=Counter)
    results: list[float] = field(default_factory=list)  # per game, policy's score 1 / 0.5 / 0

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses

    @property
    def score(self) -> float:
        return (self.wins + 0.5 * self.draws) / max(self.games, 1)

    def interval(self) -> tuple[float, float]:
        from chessrl.stats import wilson

        return wilson(self.wins + 0.5 * self.draws, self.games)

    def metrics(self, prefix: str) -> dict[str, float]:
        lo, hi = self.interval()
        return {f"{prefix}/score": self.score, f"{prefix}/score_lo": lo, f"{prefix}/score_hi": hi,
                f"{prefix}/games": self.games, f"{prefix}/wins": self.wins, f"{prefix}/draws": self.draws,
                f"{prefix}/losses": self.losses}


def play_match(game, policy: torch.nn.Module | Callable[[list[Any]], np.ndarray], opponent: Callable[[list[Any]], np.ndarray],
               *, games: int, temperature: float = 1.0, greedy: bool = True, seed: int = 0,
               adjudicate: float = 0.5, starts: list[Any] | None = None,
               on_game: Callable[[int, Any, float, str], None] | None = None) -> MatchResult:
    """Play ``games`` games of ``policy`` (a Policy or a states->actions callable) vs ``opponent``."""
    half = (games + 1) // 2
    rng = np.random.default_rng(seed)
    roots = starts if starts is not None else game.initial_states(half, rng)
    env = BoardGameEnv(game, batch_size=(half, 2), seed=seed)
    # every start position is played once with each colour
    td = env.load_states([game.copy_state(roots[i % len(roots)]) for i in range(half) for _ in range(2)])
    policy_side = torch.tensor([[0, 1]] * half).reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    device = next(policy.parameters()).device if isinstance(policy, torch.nn.Module) else torch.device("cpu")
    final_value = np.zeros(env.n, dtype=np.float32)
    last_mover_is_policy = np.zeros(env.n, dtype=bool)
    for _ in range(game.max_plies):
        done = td["done"].reshape(-1)
        if bool(done[: games].all()):
            break
        to_play = td["to_play"].reshape(-1)
        mine = (to_play == policy_side) & ~done
        theirs = ~mine & ~done
        actions = torch.zeros(env.n, dtype=torch.long)
        rows = torch.nonzero(mine).flatten()
        if len(rows):
            if isinstance(policy, torch.nn.Module):
                with torch.no_grad():
                    lp = log_probs(policy, td["observation"].reshape(env.n, -1)[rows].to(device),
                                   td["action_mask"].reshape(env.n, -1)[rows].to(device), temperature)
                actions[rows] = (lp.argmax(-1) if greedy else sample(lp, gen)).cpu()
            else:
                actions[rows] = torch.as_tensor(policy([env.states[i] for i in rows.tolist()]), dtype=torch.long)
        rows_t = torch.nonzero(theirs).flatten()
        if len(rows_t):
            actions[rows_t] = torch.as_tensor(opponent([env.states[i] for i in rows_t.tolist()]), dtype=torch.long)
        td["action"] = actions.reshape(env.batch_size)
        td = env.step(td)
        moved = (~done).numpy()
        final_value[moved] = td["next", "value"].reshape(-1).numpy()[moved]
        last_mover_is_policy[moved] = mine.numpy()[moved]
        td = td["next"]
    res = MatchResult()
    values_now = None
    for i in range(games):
        reason = env.reasons[i] or "max_plies"
        if env.terminated[i]:
            v = final_value[i] if last_mover_is_policy[i] else -final_value[i]
        else:  # adjudicate by the engine's view of the final position (side to move's POV)
            if values_now is None:
                values_now = np.asarray(game.values(env.states), dtype=np.float32)
            side_to_move_is_policy = int(td["to_play"].reshape(-1)[i]) == int(policy_side[i])
            v = values_now[i] if side_to_move_is_policy else -values_now[i]
            v = float(np.sign(v)) if abs(v) >= adjudicate else 0.0
            reason = "adjudicated"
        score = 1.0 if v > 0.5 else (0.0 if v < -0.5 else 0.5)
        res.results.append(score)
        res.wins += score == 1.0
        res.draws += score == 0.5
        res.losses += score == 0.0
        res.reasons[reason] += 1
        if on_game is not None:
            on_game(i, env.states[i], score, reason)
    return res

