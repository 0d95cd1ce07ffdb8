"""The chess plugin: registers the "chess" game and builds the ``chessrl/Chess-v0`` Gym env."""

from __future__ import annotations

from typing import Any

import numpy as np

import chessrl
from chessrl.envs.chess.game import ChessGame
from chessrl.envs.chess.options import ChessOptions
from chessrl.schema import build


def factory(options: ChessOptions, seed: int) -> ChessGame:
    """The game for a validated ``[env]`` section and a run seed."""
    return ChessGame(options, seed)


@chessrl.hookimpl
def chessrl_register_games(register) -> None:
    register("chess", factory, ChessOptions)


def _legal_action_space(env: Any):
    """A ``Discrete(1968)`` whose unmasked ``sample()`` draws a legal move of ``env``'s position.

    Out of 1968 actions only ~30 are legal, so plain uniform sampling (what Gymnasium's
    ``check_env`` and most example loops do) would almost always play an illegal move.
    An explicit ``mask`` or ``probability`` argument is honoured as in Gymnasium.
    """
    from gymnasium import spaces

    class LegalDiscrete(spaces.Discrete):
        def sample(self, mask=None, probability=None):  # type: ignore[override]
            last = getattr(env, "_last", None)
            if mask is None and probability is None and last is not None and last.action_mask[0].any():
                mask = last.action_mask[0].astype(np.int8)
            return super().sample(mask=mask, probability=probability)

    return LegalDiscrete(env.game.n_actions)


def make_gym_env(render_mode: str | None = None, seed: int = 0, **kwargs: Any):
    """``gymnasium.make("chessrl/Chess-v0", **kwargs)``: one board of chess, the agent plays
    the side to move. kwargs are ``[env]`` options, checked strictly (an unknown key or a bad
    value is a UserError); ``reset(options={"fen": FEN})`` starts from a position."""
    from chessrl.env import GymView

    options = build(ChessOptions, kwargs, prefix="env")
    env = GymView(ChessGame(options, seed), render_mode=render_mode)
    env.action_space = _legal_action_space(env)
    return env


__all__ = ["ChessOptions", "ChessGame", "chessrl_register_games", "factory", "make_gym_env"]
