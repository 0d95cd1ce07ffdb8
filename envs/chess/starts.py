"""Start positions: the standard position, a FEN/EPD file, or seeded random positions.

Every draw uses only the ``numpy.random.Generator`` it is given; the global ``random``,
``np.random`` and torch generators are never touched, so a seeded run is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import chess
import numpy as np

from chessrl.errors import UserError

PHASES = ("opening", "middlegame", "endgame")
MIDDLEGAME_PLIES = (20, 40)   # inclusive range of random plies for a "middlegame" start
ENDGAME_EXTRA_PIECES = (1, 4)  # inclusive range of pieces besides the two kings
_ENDGAME_PIECES = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN)
_ENDGAME_WEIGHTS = np.array([0.4, 0.15, 0.15, 0.2, 0.1])


def parse_position(text: str) -> chess.Board:
    """A board from a FEN or an EPD line (EPD operations are ignored); ValueError says why not."""
    text = text.strip()
    try:
        board = chess.Board(text)
    except ValueError as fen_error:
        board = chess.Board()
        try:
            board.set_epd(text)
        except ValueError:
            raise ValueError(f"not a valid FEN or EPD: {fen_error}") from None
    if not board.is_valid():
        problems = [flag.name.lower() for flag in chess.Status if flag and flag in board.status()]
        raise ValueError(f"illegal position ({', '.join(problems)})")
    if not any(board.generate_legal_moves()):
        raise ValueError("the game is already over in this position (no legal moves)")
    return board


def load_start_file(path: str) -> list[str]:
    """The FENs of a start file: one FEN or EPD per line; blank lines and ``#`` comments skipped.

    A line that is not a legal, playable position is a :class:`UserError` naming the file
    and line number.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"cannot read start file {path} ([env] start_file): {exc.strerror or exc}") from None
    fens = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fens.append(parse_position(line).fen())
        except ValueError as exc:
            raise UserError(f"{path}:{no}: bad start position {line[:80]!r}: {exc}") from None
    if not fens:
        raise UserError(f"{path}: the start file has no positions ([env] start_file)")
    return fens


def random_play(board: chess.Board, plies: int, rng: np.random.Generator) -> bool:
    """Push ``plies`` uniformly random legal moves; False if the game ended on the way."""
    for _ in range(plies):
        moves = list(board.legal_moves)
        if not moves:
            return False
        board.push(moves[int(rng.integers(len(moves)))])
    return not board.is_game_over(claim_draw=True)


def random_endgame(rng: np.random.Generator) -> chess.Board:
    """A random legal, playable position with two kings and 1-4 other pieces, no castling."""
    while True:
        board = chess.Board(None)
        squares = rng.permutation(64)
        board.set_piece_at(int(squares[0]), chess.Piece(chess.KING, chess.WHITE))
        board.set_piece_at(int(squares[1]), chess.Piece(chess.KING, chess.BLACK))
        extra = int(rng.integers(ENDGAME_EXTRA_PIECES[0], ENDGAME_EXTRA_PIECES[1] + 1))
        for k in range(extra):
            piece_type = _ENDGAME_PIECES[int(rng.choice(len(_ENDGAME_PIECES), p=_ENDGAME_WEIGHTS))]
            color = bool(rng.integers(2))
            board.set_piece_at(int(squares[2 + k]), chess.Piece(piece_type, color))
        board.turn = bool(rng.integers(2))
        if board.is_valid() and not board.is_game_over(claim_draw=True):
            return board


class StartSampler:
    """Draws start boards for ``start`` = "standard" | "file" | "random" (see docs/chess.md)."""

    def __init__(self, start: str, start_file: str = "", random_plies: int = 8,
                 phase_mix: Sequence[float] = (1.0, 0.0, 0.0)):
        self.start = start
        self.random_plies = random_plies
        weights = np.asarray(phase_mix, dtype=np.float64)
        self.phase_p = weights / weights.sum()
        self.fens: list[str] = load_start_file(start_file) if start == "file" else []

    def sample(self, n: int, rng: np.random.Generator) -> list[chess.Board]:
        """``n`` independent start boards."""
        return [self._one(rng) for _ in range(n)]

    def _one(self, rng: np.random.Generator) -> chess.Board:
        if self.start == "standard":
            return chess.Board()
        if self.start == "file":
            return chess.Board(self.fens[int(rng.integers(len(self.fens)))])
        phase = PHASES[int(rng.choice(3, p=self.phase_p))]
        if phase == "endgame":
            return random_endgame(rng)
        for _attempt in range(1000):
            plies = (self.random_plies if phase == "opening"
                     else int(rng.integers(MIDDLEGAME_PLIES[0], MIDDLEGAME_PLIES[1] + 1)))
            board = chess.Board()
            if random_play(board, plies, rng):
                return board
        raise RuntimeError(f"random play of {plies} plies kept ending the game")  # pragma: no cover
