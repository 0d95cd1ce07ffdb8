"""The chess plugin: registers the "chess" game and builds the ``chessrl/Chess-v0`` Gym env.

Every ``chessrl`` command imports this module when it starts, so the game (python-chess,
Stockfish, NumPy) is imported only when a game is built.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import chessrl
from chessrl.envs.chess.options import ChessOptions
from chessrl.errors import UserError

if TYPE_CHECKING:
    from chessrl.envs.chess.game import ChessGame


def factory(options: ChessOptions, seed: int) -> ChessGame:
    """The game for a validated ``[env]`` section and a run seed; an engine path that is not a
    UCI engine is a :class:`UserError` here, before a run writes anything."""
    from chessrl.envs.chess.game import ChessGame

    game = ChessGame(options, seed)
    if options.reward == "stockfish":
        check_uci(shutil.which(options.stockfish_path) or options.stockfish_path)
    return game


@functools.lru_cache(maxsize=None)
def check_uci(path: str, timeout: float = 10.0) -> None:
    """Start ``path`` once, say ``uci`` and expect ``uciok`` (once per path and process)."""
    try:
        res = subprocess.run([path], input=b"uci\nquit\n", capture_output=True, timeout=timeout)
        ok, why = (
            b"uciok" in res.stdout,
            f"it exited with code {res.returncode} without answering 'uci'",
        )
    except subprocess.TimeoutExpired:
        ok, why = False, f"it did not answer 'uci' within {timeout:g} s"
    except OSError as exc:
        ok, why = False, f"it cannot be started: {exc.strerror or exc}"
    if not ok:
        raise UserError(
            f"[env] stockfish_path = {path!r} is not a UCI chess engine ({why}); point it at "
            "Stockfish (Debian's `stockfish` package installs /usr/games/stockfish)"
        )


@chessrl.hookimpl
def chessrl_register_games(register) -> None:
    register("chess", factory, ChessOptions)


@chessrl.hookimpl
def chessrl_register_commands(subparsers) -> None:
    """``chessrl eval`` (matches against Stockfish) and ``chessrl pretrain`` (distillation); the
    arguments only: each command imports its implementation when it runs."""
    from chessrl.envs.chess.commands import add_commands

    add_commands(subparsers)


@chessrl.hookimpl
def chessrl_register_evaluators(register) -> None:
    """Chess's ``chessrl eval``: Stockfish opponents, openings, PGN, benchmark, ladder."""
    from chessrl.envs.chess.commands import add_eval_arguments, run_eval

    register("chess", run_eval, add_eval_arguments)


def make_gym_env(render_mode: str | None = None, seed: int = 0, **kwargs: Any):
    """``gymnasium.make("chessrl/Chess-v0", **kwargs)``: one board of chess, the agent plays
    the side to move; :func:`chessrl.gym_env.make_gym_env` (kwargs are ``[env]`` options, checked
    strictly, plus ``illegal_action``); ``reset(options={"fen": FEN})`` starts from a position."""
    from chessrl.gym_env import make_gym_env as core_make_gym_env

    return core_make_gym_env("chess", render_mode=render_mode, seed=seed, **kwargs)


__all__ = [
    "ChessOptions",
    "chessrl_register_games",
    "chessrl_register_commands",
    "chessrl_register_evaluators",
    "factory",
    "make_gym_env",
]
