"""The chess plugin: registers the "chess" game and builds the ``chessrl/Chess-v0`` Gym env."""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

import numpy as np

import chessrl
from chessrl.envs.chess.game import ChessGame
from chessrl.envs.chess.options import ChessOptions
from chessrl.errors import UserError
from chessrl.schema import build

def factory(options: ChessOptions, seed: int) -> ChessGame:
    """The game for a validated ``[env]`` section and a run seed; an engine path that is not a
    UCI engine is a :class:`UserError` here, before a run writes anything."""
    game = ChessGame(options, seed)
    if options.reward == "stockfish":
        check_uci(shutil.which(options.stockfish_path) or options.stockfish_path)
    return game


@functools.lru_cache(maxsize=None)
def check_uci(path: str, timeout: float = 10.0) -> None:
    """Start ``path`` once, say ``uci`` and expect ``uciok`` (once per path and process)."""
    try:
        res = subprocess.run([path], input=b"uci\nquit\n", capture_output=True, timeout=timeout)
        ok, why = b"uciok" in res.stdout, f"it exited with code {res.returncode} without answering 'uci'"
    except subprocess.TimeoutExpired:
        ok, why = False, f"it did not answer 'uci' within {timeout:g} s"
    except OSError as exc:
        ok, why = False, f"it cannot be started: {exc.strerror or exc}"
    if not ok:
        raise UserError(f"[env] stockfish_path = {path!r} is not a UCI chess engine ({why}); point it at "
                        "Stockfish (Debian's `stockfish` package installs /usr/games/stockfish)")


@chessrl.hookimpl
def chessrl_register_games(register) -> None:
    register("chess", factory, ChessOptions)


@chessrl.hookimpl
def chessrl_register_commands(subparsers) -> None:
    """``chessrl eval`` (matches against Stockfish) and ``chessrl pretrain`` (distillation)."""
    from chessrl.envs.chess.evaluate import add_eval_command

    add_eval_command(subparsers)
    p = subparsers.add_parser("pretrain", help="pretrain the chess policy by Stockfish distillation "
                              "(docs/pretraining.md)")
    p.add_argument("config", help="pretraining TOML, e.g. examples/pretrain.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set train.epochs=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args) -> int:
        from chessrl.envs.chess.pretrain import cmd_pretrain

        return cmd_pretrain(args)

    p.set_defaults(func=run)


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


__all__ = ["ChessOptions", "ChessGame", "chessrl_register_games", "chessrl_register_commands", "factory", "make_gym_env"]
