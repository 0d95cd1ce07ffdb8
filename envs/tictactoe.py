"""Tic-tac-toe: a 3x3 game solved exactly, the smallest useful chessrl game.

A state is a plain ``int``: the board in base 3 (cell ``i`` contributes ``v * 3**i`` with
``v`` = 0 empty, 1 = X (first player), 2 = O). Ints are immutable, so copies are free and
group members can never alias each other. Cells and actions are numbered row by row from
the top-left::

    0 | 1 | 2
    3 | 4 | 5
    6 | 7 | 8

All 5,478 positions reachable from the empty board are solved by memoised minimax once per
process (about 0.1 s), so every method is a table lookup: observations, legal masks,
terminal flags, exact values (+1 win, 0 draw, -1 loss for the side to move) and the
perfect player's move preferences (a win sooner beats a win later; a loss later beats a
loss sooner, so the engine finishes won games instead of dawdling).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

import chessrl
from chessrl.game import Game, Observation
from chessrl.schema import opt

NAME = "tictactoe"
N_CELLS = 9
N_CODES = 3**N_CELLS
POW3 = 3 ** np.arange(N_CELLS, dtype=np.int64)
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
REASONS = ("", "win", "draw")  # indexed by the reason code in the tables
SYMBOLS = ".XO"


@dataclass
class TicTacToeOptions:
    """``[env]`` options of ``name = "tictactoe"``."""

    start: str = opt(
        "empty",
        "Start position: 'empty' board; 'random' = random_plies uniformly random "
        "moves from the empty board (never a finished game); 'mixed' = a uniformly "
        "drawn number of such moves in [0, random_plies], so every stage of the game "
        "is a root.",
        choices=("empty", "random", "mixed"),
    )
    random_plies: int = opt(
        2,
        "Random moves played before the start when start = 'random' (at most this "
        "many for 'mixed').",
        ge=0,
        le=8,
    )
    max_plies: int = opt(
        9,
        "Truncate a trajectory after this many plies (a game never lasts more than 9).",
        ge=1,
        le=9,
    )


@dataclass(frozen=True)
class _Tables:
    """Per-code lookup tables over all 3**9 codes; only ``reachable`` codes are meaningful."""

    reachable: np.ndarray  # bool [N]
    cells: np.ndarray  # int8 [N, 9]: 0 empty, 1 X, 2 O
    to_play: np.ndarray  # int64 [N]: 0 = X to move, 1 = O to move
    reason: np.ndarray  # int8 [N]: index into REASONS
    legal: np.ndarray  # bool [N, 9]: empty cells of non-terminal positions
    value: np.ndarray  # float32 [N]: exact minimax value for the side to move
    move_key: np.ndarray  # int64 [N, 9]: preference of each move for the mover; -10**6 if illegal


def _winner(cells: tuple[int, ...]) -> int:
    """1 or 2 if that player has three in a line, else 0."""
    for a, b, c in LINES:
        if cells[a] and cells[a] == cells[b] == cells[c]:
            return cells[a]
    return 0


@functools.cache
def tables() -> _Tables:
    """Solve every reachable position once (memoised minimax over the 5,478 states)."""
    reachable = np.zeros(N_CODES, dtype=bool)
    cells = np.zeros((N_CODES, N_CELLS), dtype=np.int8)
    to_play = np.zeros(N_CODES, dtype=np.int64)
    reason = np.zeros(N_CODES, dtype=np.int8)
    legal = np.zeros((N_CODES, N_CELLS), dtype=bool)
    value = np.zeros(N_CODES, dtype=np.float32)
    move_key = np.full((N_CODES, N_CELLS), -(10**6), dtype=np.int64)
    memo: dict[int, tuple[int, int]] = {}  # code -> (value, plies to the end under best play)

    def solve(code: int, board: list[int]) -> tuple[int, int]:
        if code in memo:
            return memo[code]
        reachable[code] = True
        cells[code] = board
        n_stones = sum(1 for v in board if v)
        player = 1 + (n_stones % 2)
        to_play[code] = player - 1
        if _winner(tuple(board)):  # the player who just moved made a line
            memo[code] = (-1, 0)
            reason[code] = 1
            value[code] = -1.0
            return memo[code]
        if n_stones == N_CELLS:
            memo[code] = (0, 0)
            reason[code] = 2
            return memo[code]
        best_key, best = -(10**6), (0, 0)
        for a in range(N_CELLS):
            if board[a]:
                continue
            legal[code, a] = True
            board[a] = player
            v, d = solve(code + player * 3**a, board)
            board[a] = 0
            v, d = -v, d + 1
            # Faster wins and slower losses are preferred; the value itself stays exact.
            key = v * (100 - d)
            move_key[code, a] = key
            if key > best_key:
                best_key, best = key, (v, d)
        memo[code] = best
        value[code] = best[0]
        return best

    solve(0, [0] * N_CELLS)
    for arr in (reachable, cells, to_play, reason, legal, value, move_key):
        arr.flags.writeable = False
    return _Tables(reachable, cells, to_play, reason, legal, value, move_key)


def parse_board(text: str) -> int:
    """The code of a board written as 9 of ``X O .`` (``|``, ``/`` and spaces are ignored)."""
    chars = [ch for ch in text.upper() if ch not in "|/ \n\t"]
    if len(chars) != N_CELLS or any(ch not in SYMBOLS for ch in chars):
        raise ValueError(f"a tic-tac-toe board is 9 cells of 'X', 'O' or '.', got {text!r}")
    code = sum(SYMBOLS.index(ch) * 3**i for i, ch in enumerate(chars))
    if not tables().reachable[code]:
        raise ValueError(f"board {text!r} cannot arise in a game from the empty board")
    return code


class TicTacToe(Game):
    """Tic-tac-toe with exact minimax values and a perfect engine."""

    name = NAME
    n_actions = N_CELLS
    obs_len = N_CELLS
    obs_vocab = 3  # 0 empty, 1 the side to move's mark, 2 the opponent's mark

    def __init__(self, options: TicTacToeOptions | None = None, seed: int = 0):
        self.options = options or TicTacToeOptions()
        self.max_plies = self.options.max_plies
        self.t = tables()
        self.reseed(seed)

    # --- the Game contract -----------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Own generators, never the global RNG: engine tie-breaks and the random eval opponent
        draw from separate streams, so evaluating does not shift the engine's choices."""
        self._engine_rng, self._random_rng = np.random.default_rng(seed).spawn(2)

    def initial_states(self, n: int, rng: np.random.Generator) -> list[int]:
        """``n`` codes: the empty board, or ``random_plies`` random moves that do not end the
        game."""
        if self.options.start == "empty" or self.options.random_plies == 0:
            return [0] * n
        if self.options.start == "mixed":
            return [
                self._random_start(rng, int(rng.integers(0, self.options.random_plies + 1)))
                for _ in range(n)
            ]
        return [self._random_start(rng, self.options.random_plies) for _ in range(n)]

    def eval_states(self, n: int, rng: np.random.Generator) -> list[int]:
        """Evaluation always starts from the empty board: that is where perfect play draws."""
        return [0] * n

    def _random_start(self, rng: np.random.Generator, plies: int) -> int:
        t = self.t
        while True:  # restart on a dead end (every move would finish the game); rare
            code = 0
            for _ in range(plies):
                moves = np.flatnonzero(t.legal[code])
                children = code + (t.to_play[code] + 1) * POW3[moves]
                ok = children[t.reason[children] == 0]
                if ok.size == 0:
                    break
                code = int(ok[rng.integers(ok.size)])
            else:
                return code

    def copy_state(self, state: int) -> int:
        """States are immutable ints, so the state itself is an independent copy."""
        return int(state)

    def _codes(self, states: Sequence[int]) -> np.ndarray:
        codes = np.asarray(states, dtype=np.int64).reshape(-1)
        if codes.size and not self.t.reachable[codes].all():
            bad = codes[~self.t.reachable[codes]][0]
            raise ValueError(f"{bad} is not a reachable tic-tac-toe position")
        return codes

    def action_structure(self) -> np.ndarray:
        """A placement connects its cell's token with itself (kind 0)."""
        cells = np.arange(N_CELLS)
        return np.stack([cells, cells, np.zeros(N_CELLS, dtype=np.int64)], axis=1)

    def observe(self, states: Sequence[int]) -> Observation:
        """Tokens per cell: 0 empty, 1 the side to move's mark, 2 the opponent's."""
        t, codes = self.t, self._codes(states)
        cells = t.cells[codes].astype(np.int64)
        own = (t.to_play[codes] + 1)[:, None]
        tokens = np.where(cells == 0, 0, np.where(cells == own, 1, 2))
        return Observation(
            tokens=tokens,
            action_mask=t.legal[codes].copy(),
            to_play=t.to_play[codes].copy(),
            terminated=t.reason[codes] > 0,
            reason=[REASONS[r] for r in t.reason[codes]],
        )

    def play(self, states: Sequence[int], actions: np.ndarray) -> list[int]:
        """Place the side to move's mark on cell ``action``; raises ValueError if illegal."""
        t, codes = self.t, self._codes(states)
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        ok = (actions >= 0) & (actions < N_CELLS)
        ok[ok] = t.legal[codes[ok], actions[ok]]
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"illegal tic-tac-toe action {actions[i]} in {self.state_to_str(int(codes[i]))}"
            )
        return [int(c) for c in codes + (t.to_play[codes] + 1) * POW3[actions]]

    def values(self, states: Sequence[int]) -> np.ndarray:
        """Exact minimax value for the side to move: +1 win, 0 draw, -1 loss (also when
        terminal)."""
        return self.t.value[self._codes(states)].astype(np.float32)

    def engine_actions(self, states: Sequence[int]) -> np.ndarray:
        """A perfect player: uniformly random among the best moves (fastest win / slowest loss)."""
        return self._best_moves(self._codes(states), self._engine_rng)

    def _best_moves(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        keys = self.t.move_key[codes]
        out = np.zeros(codes.size, dtype=np.int64)
        for i, row in enumerate(keys):
            if self.t.reason[codes[i]]:
                continue  # finished: no move; 0 keeps the output well-formed
            best = np.flatnonzero(row == row.max())
            out[i] = best[rng.integers(best.size)]
        return out

    def _random_moves(self, states: Sequence[int]) -> np.ndarray:
        codes = self._codes(states)
        out = np.zeros(codes.size, dtype=np.int64)
        for i, c in enumerate(codes):
            moves = np.flatnonzero(self.t.legal[c])
            if moves.size:
                out[i] = moves[self._random_rng.integers(moves.size)]
        return out

    def eval_opponents(self) -> dict[str, Callable[[Sequence[int]], np.ndarray]]:
        """``perfect``: the engine (never loses); ``random``: uniformly random legal moves."""
        return {"perfect": self.engine_actions, "random": self._random_moves}

    def action_to_str(self, action: int) -> str:
        """``r<row>c<col>`` with row 0 at the top, e.g. action 4 is ``r1c1`` (the centre)."""
        return f"r{int(action) // 3}c{int(action) % 3}"

    def state_to_str(self, state: int) -> str:
        """Rows top to bottom, e.g. ``X.O|.X.|..O (X to move)``; X always moves first."""
        cells = self.t.cells[int(state)]
        rows = ["".join(SYMBOLS[v] for v in cells[r * 3 : r * 3 + 3]) for r in range(3)]
        reason = REASONS[self.t.reason[int(state)]]
        tail = f"{'XO'[self.t.to_play[int(state)]]} to move" if not reason else reason
        return f"{'|'.join(rows)} ({tail})"

    def state_from_options(self, options: dict[str, Any]) -> int:
        """The Gym view's ``reset(options=...)``: ``{"board": "X.O|.X.|..."}`` or
        ``{"moves": [4, 0]}``."""
        unknown = set(options) - {"board", "moves"}
        if unknown or len(options) != 1:
            raise ValueError(
                "tictactoe reset options take exactly one of 'board' or 'moves', "
                f"got {sorted(options)}"
            )
        if "board" in options:
            return parse_board(str(options["board"]))
        state = 0
        for a in options["moves"]:
            state = self.play([state], np.array([int(a)]))[0]
        return state


def make_game(options: TicTacToeOptions, seed: int = 0) -> TicTacToe:
    """The factory registered with the core."""
    return TicTacToe(options, seed)


@chessrl.hookimpl
def chessrl_register_games(register) -> None:
    register(NAME, make_game, TicTacToeOptions)


def make_gym_env(render_mode: str | None = None, seed: int = 0, **options: Any):
    """Gymnasium entry point of ``chessrl/TicTacToe-v0``: :func:`chessrl.gym_env.make_gym_env`
    (keyword args are ``[env]`` options, validated, plus ``illegal_action``)."""
    from chessrl.gym_env import make_gym_env as core_make_gym_env

    return core_make_gym_env(NAME, render_mode=render_mode, seed=seed, **options)
