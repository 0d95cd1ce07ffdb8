"""Start positions: the standard position, a FEN/EPD file, seeded random positions, or
positions from seeded engine self-play games.

Every draw uses only the ``numpy.random.Generator`` it is given; the global ``random``,
``np.random`` and torch generators are never touched, so a seeded run is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import chess
import numpy as np

from chessrl.errors import UserError

PHASES = ("opening", "middlegame", "endgame")
MIDDLEGAME_PLIES = (20, 40)  # inclusive range of random plies for a "middlegame" start
ENDGAME_EXTRA_PIECES = (1, 4)  # inclusive range of pieces besides the two kings
_ENDGAME_PIECES = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN)
_ENDGAME_WEIGHTS = np.array([0.4, 0.15, 0.15, 0.2, 0.1])
SELFPLAY_ROOTS_PER_GAME = 16  # start positions taken from one self-play game, at distinct plies
SELFPLAY_PLIES = (12, 160)  # a self-play game is played to a length drawn from this range ...
SELFPLAY_MIN_PLY = 6  # ... and its positions from this ply on are candidates
SELFPLAY_EPSILON = 0.2  # chance that a self-play move is a uniformly random legal move
TACTIC_MIN_PLY = 10  # a "tactics" root is at least this deep into its random game
MATES_PER_GAME = 4  # at most this many mate-in-one roots from one random game
PIECE_VALUES = {
    chess.PAWN: 1,
    chess.KNIGHT: 3,
    chess.BISHOP: 3,
    chess.ROOK: 5,
    chess.QUEEN: 9,
    chess.KING: 0,
}


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


def _rule_end(board: chess.Board) -> str:
    """The game module's end reason of ``board`` ("" while it is on)."""
    from chessrl.envs.chess.game import repetitions, terminal_reason  # it imports this module

    return terminal_reason(board, any(board.generate_legal_moves()), repetitions(board))


def load_start_file(path: str) -> list[str]:
    """The FENs of a start file: one FEN or EPD per line; blank lines and ``#`` comments skipped.

    A line that is not a legal, playable position (also one over by insufficient material or
    the fifty-move rule) is a :class:`UserError` naming the file and line number.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(
            f"cannot read start file {path} ([env] start_file): {exc.strerror or exc}"
        ) from None
    fens = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            board = parse_position(line)
            reason = _rule_end(board)
            if reason:  # legal moves, but over by a rule: every trajectory would be empty
                raise ValueError(f"the game is already over in this position ({reason})")
            fens.append(board.fen())
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


def distinct_random_positions(
    n: int, rng: np.random.Generator, plies: tuple[int, int] = (2, 40)
) -> list[chess.Board]:
    """``n`` positions distinct by EPD, none over, each reached by a number of uniformly random
    moves from the start drawn from ``[plies[0], plies[1])``: test and benchmark positions."""
    seen: dict[str, chess.Board] = {}
    while len(seen) < n:
        board = chess.Board()
        if random_play(board, int(rng.integers(*plies)), rng):
            seen.setdefault(board.epd(), board)
    return list(seen.values())


def mating_moves(board: chess.Board, legal: list[chess.Move] | None = None) -> list[chess.Move]:
    """Every legal move that checkmates, in python-chess's move order.

    Only a move that can give check is tried: one that lands on a line or a knight's jump
    from the enemy king, leaves such a line (a discovered check), castles, promotes or
    captures en passant; the others cannot check, so ``gives_check`` (a push and a pop) runs on
    a few moves per position instead of all of them.
    """
    king = board.king(not board.turn)
    if king is None:
        return []
    lines = (  # the king's full rank, file and diagonals (attacks on an empty board)
        chess.BB_RANK_ATTACKS[king][0]
        | chess.BB_FILE_ATTACKS[king][0]
        | chess.BB_DIAG_ATTACKS[king][0]
    )
    near = lines | chess.BB_KNIGHT_ATTACKS[king]
    out = []
    for move in board.legal_moves if legal is None else legal:
        if not (
            chess.BB_SQUARES[move.to_square] & near
            or chess.BB_SQUARES[move.from_square] & lines
            or move.promotion
            or board.is_castling(move)
            or board.is_en_passant(move)
        ):
            continue
        if board.gives_check(move):
            board.push(move)
            if board.is_checkmate():
                out.append(move)
            board.pop()
    return out


def tempting(board: chess.Board) -> bool:
    """A cheap test for a tactic: a capture of an undefended or bigger piece, or a promotion."""
    for move in board.legal_moves:
        if move.promotion:
            return True
        if board.is_capture(move):
            if board.is_en_passant(move) or not board.is_attacked_by(
                not board.turn, move.to_square
            ):
                return True
            if (
                PIECE_VALUES[board.piece_type_at(move.to_square)]
                > PIECE_VALUES[board.piece_type_at(move.from_square)]
            ):
                return True
    return False


def random_mates(n: int, rng: np.random.Generator) -> list[chess.Board]:
    """``n`` positions with a mate in one for the side to move, from uniformly random games
    (at most ``MATES_PER_GAME`` from one game, each at least ``TACTIC_MIN_PLY`` plies deep)."""
    out: list[chess.Board] = []
    while len(out) < n:
        board, taken = chess.Board(), 0
        while taken < MATES_PER_GAME and len(out) < n and board.ply() < 300:
            moves = list(board.legal_moves)  # generated once per ply, for _over and the mates
            if _over(board, moves):
                break
            if board.ply() >= TACTIC_MIN_PLY and len(moves) >= 2 and mating_moves(board, moves):
                out.append(board.copy())
                taken += 1
            board.push(moves[int(rng.integers(len(moves)))])
    return out


def random_tempting(rng: np.random.Generator) -> chess.Board:
    """A random middlegame (20-40 random plies) in which a capture or promotion tempts
    (:func:`tempting`)."""
    while True:
        board = chess.Board()
        if random_play(
            board, int(rng.integers(MIDDLEGAME_PLIES[0], MIDDLEGAME_PLIES[1] + 1)), rng
        ) and tempting(board):
            return board


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


def _recent(board: chess.Board) -> chess.Board:
    """``board`` with its move stack cut to the plies a repetition can reach."""
    if len(board.move_stack) <= board.halfmove_clock:
        return board
    return board.copy(stack=board.halfmove_clock)


def _over(board: chess.Board, legal: list[chess.Move] | None = None) -> bool:
    """Whether the game is over by a rule (repetitions by the fast scan of the game module);
    ``legal``, the board's legal moves when the caller has them, spares generating them."""
    from chessrl.envs.chess.game import repetitions  # the game module imports this one

    return (
        not (any(board.generate_legal_moves()) if legal is None else legal)
        or board.is_insufficient_material()
        or board.halfmove_clock >= 100
        or repetitions(board) >= 2
    )


class StartSampler:
    """Draws start boards for ``start`` = "standard" | "file" | "random" | "selfplay"
    (docs/chess.md).

    "selfplay": positions along games that start with ``random_plies`` random plies and go on
    with ``engine`` moves (a function boards -> moves, deterministic: Stockfish at a pinned
    depth from a cleared hash), a uniformly random move instead with probability
    ``SELFPLAY_EPSILON``; each game is played to a random length and gives up to
    ``SELFPLAY_ROOTS_PER_GAME`` positions at distinct random plies >= ``SELFPLAY_MIN_PLY``.
    Positions whose EPD is in ``exclude`` (a held-out benchmark's) are never returned.
    """

    def __init__(
        self,
        start: str,
        start_file: str = "",
        random_plies: int = 8,
        phase_mix: Sequence[float] = (1.0, 0.0, 0.0),
        engine: Callable[[list[chess.Board]], list[chess.Move]] | None = None,
        exclude: Callable[[], set[str]] | set[str] | None = None,
    ):
        self.start = start
        self.random_plies = random_plies
        weights = np.asarray(phase_mix, dtype=np.float64)
        self.phase_p = weights / weights.sum()
        self.fens: list[str] = load_start_file(start_file) if start == "file" else []
        self.engine = engine
        self._exclude = exclude
        self.excluded = 0  # draws rejected because the benchmark holds them

    @property
    def exclude(self) -> set[str]:
        if callable(self._exclude):
            self._exclude = self._exclude()
        return self._exclude or set()

    def sample(self, n: int, rng: np.random.Generator) -> list[chess.Board]:
        """``n`` start boards (independent, except that "selfplay" takes several from one game).
        A random or self-play start keeps its move history only as far back as a repetition can
        reach (the halfmove clock): all the game rules read of it, and group copies stay cheap."""
        return [_recent(b) for b in self._sample(n, rng)]

    def _sample(self, n: int, rng: np.random.Generator) -> list[chess.Board]:
        if self.start == "selfplay":
            return self._selfplay(n, rng)
        if self.start == "random" and len(self.phase_p) >= 4 and self.phase_p[3:].sum() > 0:
            # the 4th and 5th phase weights: those shares of the roots from self-play games and
            # from tactics (half mates in one, half tempting captures), in draw order
            kind = rng.choice(
                3,
                size=n,
                p=np.concatenate(
                    [[self.phase_p[:3].sum()], self.phase_p[3:], np.zeros(5 - len(self.phase_p))]
                ),
            )
            counts = np.bincount(kind, minlength=3)
            drawn = [
                iter(draw(int(c), rng) if c else ())
                for draw, c in zip((self._random, self._selfplay, self._tactics), counts)
            ]
            return [next(drawn[k]) for k in kind]
        return self._random(n, rng)

    def _tactics(self, n: int, rng: np.random.Generator) -> list[chess.Board]:
        mates = int(rng.binomial(n, 0.5))
        out = [b for b in random_mates(mates, rng) if not self._held_out(b)]
        while len(out) < n:
            board = random_mates(1, rng)[0] if len(out) < mates else random_tempting(rng)
            if not self._held_out(board):
                out.append(board)
        return [out[i] for i in rng.permutation(len(out))]

    def _random(self, n: int, rng: np.random.Generator) -> list[chess.Board]:
        out: list[chess.Board] = []
        while len(out) < n:
            board = self._one(rng)
            if self._held_out(board):
                continue
            out.append(board)
        return out

    def _held_out(self, board: chess.Board) -> bool:
        if self.start in ("standard", "file"):
            return False  # the user's own positions: theirs to choose
        if board.epd() in self.exclude:
            self.excluded += 1
            return True
        return False

    def _one(self, rng: np.random.Generator) -> chess.Board:
        if self.start == "standard":
            return chess.Board()
        if self.start == "file":
            return chess.Board(self.fens[int(rng.integers(len(self.fens)))])
        p = (
            self.phase_p[:3] / self.phase_p[:3].sum()
            if self.phase_p[:3].sum() > 0
            else np.array([1.0, 0, 0])
        )
        phase = PHASES[int(rng.choice(3, p=p))]
        if phase == "endgame":
            return random_endgame(rng)
        for _attempt in range(1000):
            plies = (
                self.random_plies
                if phase == "opening"
                else int(rng.integers(MIDDLEGAME_PLIES[0], MIDDLEGAME_PLIES[1] + 1))
            )
            board = chess.Board()
            if random_play(board, plies, rng):
                return board
        raise RuntimeError(f"random play of {plies} plies kept ending the game")  # pragma: no cover

    def _selfplay(self, n: int, rng: np.random.Generator) -> list[chess.Board]:
        if self.engine is None:
            raise RuntimeError("start = 'selfplay' needs an engine")
        out: list[chess.Board] = []
        while len(out) < n:
            games, wanted = [], []
            for _ in range(-(-(n - len(out)) // SELFPLAY_ROOTS_PER_GAME)):
                board = chess.Board()
                while not random_play(board, self.random_plies, rng):
                    board = chess.Board()
                length = int(
                    rng.integers(max(SELFPLAY_PLIES[0], board.ply() + 1), SELFPLAY_PLIES[1] + 1)
                )
                first = max(SELFPLAY_MIN_PLY, board.ply())
                k = min(SELFPLAY_ROOTS_PER_GAME, length - first + 1)
                games.append(board)
                wanted.append(
                    set(
                        int(p)
                        for p in rng.choice(np.arange(first, length + 1), size=k, replace=False)
                    )
                )
            live = list(range(len(games)))
            while live and len(out) < n:
                live = [g for g in live if not _over(games[g])]
                for g in live:
                    if games[g].ply() in wanted[g] and not self._held_out(games[g]):
                        out.append(games[g].copy())
                live = [g for g in live if games[g].ply() < max(wanted[g])]
                if not live:
                    break
                moves = self.engine([games[g] for g in live])
                for g, move in zip(live, moves):
                    if rng.random() < SELFPLAY_EPSILON:
                        legal = list(games[g].legal_moves)
                        move = legal[int(rng.integers(len(legal)))]
                    games[g].push(move)
        return out[:n]
