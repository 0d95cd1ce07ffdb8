"""The game contract: what a game plugin gives the core.

A game is a plugin. Its module implements ``chessrl_register_games(register)`` and calls
``register(name, factory, options_schema)``: ``options_schema`` is a dataclass of the game's
``[env]`` options (built with :func:`chessrl.schema.opt`), ``factory(options, seed)`` returns
a :class:`Game`. The core drives every game through this class alone, with batched,
NumPy-valued methods over lists of opaque game states. Two players; ``to_play`` says who
moves, so one player may move twice in a row (an extra turn, a pass). Values and rewards are
zero-sum and in [-1, 1], always for the ``to_play`` of the position, finished ones included.

From a Game the core builds the TorchRL env (:class:`chessrl.env.BoardGameEnv`) and the
Gymnasium view (:class:`chessrl.gym_env.GymView`); a game never writes either itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class Observation:
    """A batch of ``n`` observed positions, from the side to move's perspective."""

    tokens: np.ndarray  # int64 [n, obs_len], each in [0, obs_vocab)
    action_mask: np.ndarray  # bool [n, n_actions]; all False only where terminated
    to_play: np.ndarray  # int64 [n]: 0 = first player, 1 = second player
    terminated: np.ndarray  # bool [n]: the game is over by its rules
    reason: list[str]  # per board: "" while playing, else e.g. "checkmate", "draw_repetition"


class Game:
    """Base class of a game; subclasses set the four sizes and implement the methods."""

    name: str = "game"
    n_actions: int = 0  # size of the fixed action vocabulary
    obs_len: int = 0  # tokens per observation
    obs_vocab: int = 0  # distinct token ids
    max_plies: int = 200  # a trajectory is truncated after this many plies of a game
    #: Wall seconds spent waiting on the reward engine since the game was made (the trainer
    #: logs each step's difference as ``time/reward_engine``). A game with an engine keeps it
    #: up to date (an attribute or a property); the default, for a game without one, stays 0.
    engine_seconds: float = 0.0

    def initial_states(self, n: int, rng: np.random.Generator) -> list[Any]:
        """``n`` start positions drawn from the configured start distribution (seeded by
        ``rng``)."""
        raise NotImplementedError

    def eval_states(self, n: int, rng: np.random.Generator) -> list[Any]:
        """``n`` start positions for evaluation matches (default: :meth:`initial_states`)."""
        return self.initial_states(n, rng)

    def copy_state(self, state: Any) -> Any:
        """An independent copy of ``state`` (group members start from copies of one root)."""
        raise NotImplementedError

    def observe(self, states: Sequence[Any]) -> Observation:
        """Encode ``states``: tokens, legal-action masks, side to move, terminal flags."""
        raise NotImplementedError

    def play(self, states: Sequence[Any], actions: np.ndarray) -> list[Any]:
        """Apply one legal action per state and return the new states (may mutate in place)."""
        raise NotImplementedError

    def values(self, states: Sequence[Any]) -> np.ndarray:
        """The reward engine: float32 [n] value of each position for the side to move, in [-1, 1].

        Terminal positions get the exact game result. Engine failures are retried or raised,
        never returned as 0.
        """
        raise NotImplementedError

    def engine_actions(self, states: Sequence[Any]) -> np.ndarray:
        """int64 [n]: the engine's chosen action in each (non-terminal) state.

        Used for teacher forcing and as the fixed opponent. Games without an engine raise.
        """
        raise NotImplementedError(f"game '{self.name}' has no engine to choose moves")

    def action_structure(self) -> np.ndarray | None:
        """int64 [n_actions, 3] or None: each action's source token, target token and kind.

        The token indices point into an observation's tokens (0 .. obs_len-1); kinds are small
        integers from 0 (a chess move: from-square, to-square, promotion piece or 0; a placement
        game: the cell twice, kind 0). A game that declares it can be trained with
        ``policy.head = "pairs"``, which scores an action from the two tokens' features. The
        default, None, allows only the linear head.
        """
        return None

    def check_state(self, state: Any) -> None:
        """Raise ``ValueError`` (one line: what is wrong with it) if ``state`` cannot start a game.

        The core calls it on every start a user asks for (the Gym view's ``reset(options=...)``)
        and the contract tests on the game's own starts. The default refuses a finished
        position (one with no legal move); override it to add the game's own checks (a board
        that cannot arise, too many pieces, ...) and call ``super().check_state(state)``.
        """
        obs = self.observe([state])
        if obs.terminated[0] or not obs.action_mask[0].any():
            reason = obs.reason[0] or "no legal move"
            raise ValueError(
                f"the position is already finished ({reason}): "
                f"{self.state_to_str(state)}; "
                "start from a position with a move to play"
            )

    def state_from_options(self, options: dict[str, Any]) -> Any:
        """Optional: the start state for the Gym view's ``reset(options=...)`` (e.g.
        ``{"fen": ...}``, ``{"moves": [...]}``). Raise ``ValueError`` naming the unknown or bad
        option; the core adds the game and the request and calls :meth:`check_state` on the
        result. The default takes no options."""
        raise ValueError(f"game '{self.name}' takes no reset options")

    def action_to_str(self, action: int) -> str:
        """A human-readable name of an action index (a UCI move, a column, ...)."""
        return str(action)

    def state_to_str(self, state: Any) -> str:
        """A one-line description of a state (a FEN, a board string, ...)."""
        return repr(state)

    def render(self, state: Any) -> str:
        """The state drawn for a person playing in a terminal (``chessrl play``); may span
        lines. The default is :meth:`state_to_str`."""
        return self.state_to_str(state)

    def parse_action(self, state: Any, text: str) -> int:
        """The legal action a person means by ``text`` in ``state`` (``chessrl play``).

        The default accepts an :meth:`action_to_str` name (case and surrounding spaces
        ignored) or an action index. Anything else, or an illegal action, raises
        ``ValueError`` with one line saying why. Override to accept the game's notation.
        """
        legal = np.flatnonzero(self.observe([state]).action_mask[0])
        text = text.strip()
        names = {self.action_to_str(int(a)).lower(): int(a) for a in legal}
        if text.lower() in names:
            return names[text.lower()]
        if text.isdigit():
            if int(text) in set(legal.tolist()):
                return int(text)
            raise ValueError(f"action {text} is not legal here")
        raise ValueError(f"'{text}' is not a legal move here")

    def format_action(self, state: Any, action: int) -> str:
        """How a person writes ``action`` played in ``state`` (what :meth:`parse_action` reads
        back); the default is :meth:`action_to_str`."""
        return self.action_to_str(action)

    def benchmark(self, policy: Any, matches: dict[str, tuple[float, int]]) -> dict[str, float]:
        """Held-out benchmark metrics of ``policy`` (the trainer logs each as ``eval/<key>``),
        given this evaluation's ``matches``: opponent name -> (score, games).

        A proportion ``<set>/<metric>`` (a success rate over ``<set>/n`` items) carries its 95%
        interval as ``<set>/<metric>_lo`` / ``_hi``: the report's learning verdict compares its
        first and last values as it does match scores. The default measures nothing.
        """
        return {}

    def stats(self) -> dict[str, float]:
        """Cumulative reward-engine counters since the game was made: ``evaluations``,
        ``hits``, ``misses``, ``restarts``. The trainer logs each step's differences as
        ``rollout/reward_searches``, ``rollout/reward_cache_hit_rate`` and
        ``rollout/engine_restarts``; the default, for a game without an engine, is {} (no
        such metrics)."""
        return {}

    def eval_opponents(self) -> dict[str, Any]:
        """Named opponents for evaluation: name -> callable(states) -> int64 [n] actions."""
        return {}

    def reseed(self, seed: int) -> None:
        """Re-seed every generator the game owns (engine tie-breaks, random opponents) from
        ``seed``.

        The trainer calls it before every step and before every evaluation with a seed derived
        from (run seed, rank, step), so nothing a game draws depends on the steps before it and
        a resumed run replays an uninterrupted one exactly. A game that owns a generator must
        implement it; the default, for a game without one, does nothing.
        """

    def close(self) -> None:
        """Release engines and processes. Called on every exit path; must be idempotent."""
