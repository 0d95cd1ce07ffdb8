"""Game-agnostic match play: a policy against an opponent, colours alternating.

Game i (0-based) gives the policy the first player's side when i is even and the second
player's when odd; start position ``i // 2`` is played once with each colour (``starts``, or
``game.initial_states`` drawn from ``seed``). All games advance together, one batch per ply,
so an opponent backed by an engine pool spreads each ply's positions over its engines.

A game still running at the game's ``max_plies`` is adjudicated by ``adjudicator`` (default:
the game's ``values``), a side-to-move value in [-1, 1] of the final position: the side it
favours by at least ``adjudicate`` wins, otherwise it is a draw (reason "adjudicated").

A failure of the opponent, the policy callable or the adjudicator is never scored: it raises
:class:`MatchError` naming the game(s). Only the ``numpy`` and ``torch`` generators built from
``seed`` are used; no global random state is read or seeded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from chessrl.env import BoardGameEnv
from chessrl.policy import log_probs, sample


class MatchError(RuntimeError):
    """A player or the adjudicator failed; ``games`` are the (0-based) games concerned."""

    def __init__(self, games: list[int], what: str, error: BaseException):
        self.games, self.what, self.error = list(games), what, error
        listed = ", ".join(str(g + 1) for g in self.games[:8])
        more = " ..." if len(self.games) > 8 else ""
        which = f"game {self.games[0] + 1}" if len(self.games) == 1 else f"games {listed}{more}"
        super().__init__(f"{what} failed in {which}: {type(error).__name__}: {error}")


def _call(fn: Callable, states: list[Any], rows: list[int], what: str):
    """``fn(states)``, with a failure re-raised as a :class:`MatchError` naming the games;
    an exception with an ``index`` attribute names the one state (of ``states``) that failed."""
    try:
        return fn(states)
    except Exception as exc:  # noqa: BLE001 - re-raised with the game numbers, never scored
        index = getattr(exc, "index", None)
        games = [rows[index]] if isinstance(index, int) and 0 <= index < len(rows) else rows
        raise MatchError(games, what, exc) from exc


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

    def elo(self) -> tuple[float, float, float]:
        """(Elo difference, lo, hi) of the score and its Wilson 95% interval (may be +-inf)."""
        from chessrl.stats import elo_ci

        return elo_ci(self.score, self.games)

    def summary(self) -> dict[str, Any]:
        """Everything as plain values (infinite Elo bounds as None), e.g. for JSON."""
        lo, hi = self.interval()
        elo = [None if not np.isfinite(x) else round(float(x), 1) for x in self.elo()]
        return {
            "games": self.games,
            "wins": self.wins,
            "draws": self.draws,
            "losses": self.losses,
            "score": self.score,
            "score_lo": lo,
            "score_hi": hi,
            "elo": elo[0],
            "elo_lo": elo[1],
            "elo_hi": elo[2],
            "reasons": dict(sorted(self.reasons.items())),
            "results": list(self.results),
        }

    def metrics(self, prefix: str) -> dict[str, float]:
        from chessrl.stats import wilson

        lo, hi = self.interval()
        n = max(self.games, 1)
        nl_lo, nl_hi = wilson(self.wins + self.draws, self.games)
        return {
            f"{prefix}/score": self.score,
            f"{prefix}/score_lo": lo,
            f"{prefix}/score_hi": hi,
            f"{prefix}/non_losing": (self.wins + self.draws) / n,
            f"{prefix}/non_losing_lo": nl_lo,
            f"{prefix}/non_losing_hi": nl_hi,
            f"{prefix}/games": self.games,
            f"{prefix}/wins": self.wins,
            f"{prefix}/draws": self.draws,
            f"{prefix}/losses": self.losses,
        }


def play_match(
    game,
    policy: torch.nn.Module | Callable[[list[Any]], np.ndarray],
    opponent: Callable[[list[Any]], np.ndarray],
    *,
    games: int,
    temperature: float = 1.0,
    greedy: bool = True,
    seed: int = 0,
    adjudicate: float = 0.5,
    starts: list[Any] | None = None,
    on_game: Callable[[int, Any, float, str], None] | None = None,
    adjudicator: Callable[[list[Any]], np.ndarray] | None = None,
) -> MatchResult:
    """Play ``games`` games of ``policy`` (a Policy or a states->actions callable) vs ``opponent``.

    ``greedy`` plays the policy's most likely move, otherwise it samples at ``temperature``
    from a ``torch.Generator`` seeded with ``seed``. ``on_game(i, final_state, score, reason)``
    is called for each game in order; the policy played the first player iff ``i`` is even.
    """
    half = (games + 1) // 2
    rng = np.random.default_rng(seed)
    roots = starts if starts is not None else game.initial_states(half, rng)
    env = BoardGameEnv(game, batch_size=(half, 2), seed=seed)
    # every start position is played once with each colour
    td = env.load_states(
        [game.copy_state(roots[i % len(roots)]) for i in range(half) for _ in range(2)]
    )
    policy_side = torch.tensor([[0, 1]] * half).reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    device = (
        next(policy.parameters()).device
        if isinstance(policy, torch.nn.Module)
        else torch.device("cpu")
    )
    final_value = np.zeros(env.n, dtype=np.float32)
    last_mover_is_policy = np.zeros(env.n, dtype=bool)
    for _ in range(game.max_plies):
        done = td["done"].reshape(-1)
        if bool(done[:games].all()):
            break
        to_play = td["to_play"].reshape(-1)
        mine = (to_play == policy_side) & ~done
        theirs = ~mine & ~done
        actions = torch.zeros(env.n, dtype=torch.long)
        rows = torch.nonzero(mine).flatten()
        if len(rows):
            if isinstance(policy, torch.nn.Module):
                with torch.no_grad():
                    lp = log_probs(
                        policy,
                        td["observation"].reshape(env.n, -1)[rows].to(device),
                        td["action_mask"].reshape(env.n, -1)[rows].to(device),
                        temperature,
                    )
                actions[rows] = (lp.argmax(-1) if greedy else sample(lp, gen)).cpu()
            else:
                idx = rows.tolist()
                moves = _call(policy, env.game_states(idx), idx, "the policy")
                actions[rows] = torch.as_tensor(moves, dtype=torch.long)
        rows_t = torch.nonzero(theirs).flatten()
        if len(rows_t):
            idx = rows_t.tolist()
            moves = _call(opponent, env.game_states(idx), idx, "the opponent")
            actions[rows_t] = torch.as_tensor(moves, dtype=torch.long)
        td["action"] = actions.reshape(env.batch_size)
        td = env.step(td)
        moved = (~done).numpy()
        final_value[moved] = td["next", "value"].reshape(-1).numpy()[moved]
        last_mover_is_policy[moved] = mine.numpy()[moved]
        td = td["next"]
    res = MatchResult()
    terminated = td["terminated"].reshape(-1).tolist()
    states, reasons = env.game_states(), env.end_reasons()
    open_games = [i for i in range(games) if not terminated[i]]
    values_now = np.zeros(env.n, dtype=np.float32)
    if open_games:  # adjudicate by the engine's view of the final positions (side to move's POV)
        adjudicate_fn = adjudicator or game.values
        v_open = _call(adjudicate_fn, [states[i] for i in open_games], open_games, "adjudication")
        values_now[open_games] = np.asarray(v_open, dtype=np.float32)
    for i in range(games):
        reason = reasons[i] or "max_plies"
        if terminated[i]:
            v = final_value[i] if last_mover_is_policy[i] else -final_value[i]
        else:
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
            on_game(i, states[i], score, reason)
    return res
