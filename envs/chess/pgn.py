"""PGN records of evaluation games (python-chess reads them back; tests check that)."""

from __future__ import annotations

import datetime as _dt
from typing import TextIO

import chess
import chess.pgn


def result_string(policy_white: bool, score: float) -> str:
    """The PGN result from White's side for the policy's ``score`` (1, 0.5 or 0)."""
    if score == 0.5:
        return "1/2-1/2"
    white_won = (score == 1.0) == policy_white
    return "1-0" if white_won else "0-1"


# The Seven Tag Roster's Termination values (PGN standard, section 9.8.1) for chessrl's reasons;
# the reason itself goes in the custom tag TerminationReason and a comment after the last move.
TERMINATION = {
    "checkmate": "normal",
    "stalemate": "normal",
    "insufficient_material": "normal",
    "fifty_moves": "normal",
    "threefold_repetition": "normal",
    "adjudicated": "adjudication",
}


def game_record(
    board: chess.Board,
    *,
    white: str,
    black: str,
    result: str,
    termination: str,
    opening_plies: int,
    round_: int,
    event: str = "chessrl eval",
    site: str = "chessrl",
) -> chess.pgn.Game:
    """A PGN game of ``board``'s whole move stack (from its root position), with standard headers.

    Event, Site, Date, Round, White, Black, Result; ``FEN`` and ``SetUp "1"`` when the root is
    not the standard position; Termination a standard value (``normal`` for an end by the
    rules, ``adjudication``, otherwise ``unterminated``) with chessrl's reason (checkmate,
    stalemate, insufficient_material, fifty_moves, threefold_repetition, adjudicated) in the
    custom tag ``TerminationReason`` and a comment after the last move; PlyCount. The random
    opening both colours played is part of the moves (a comment marks its end, the custom tag
    ``OpeningPlies`` counts it); there is no ``Opening`` tag, which holds an opening's name.
    """
    game = chess.pgn.Game.from_board(board)  # sets FEN and SetUp for a non-standard root
    h = game.headers
    h["Event"] = event
    h["Site"] = site
    h["Date"] = _dt.date.today().strftime("%Y.%m.%d")
    h["Round"] = str(round_)
    h["White"] = white
    h["Black"] = black
    h["Result"] = result
    h["Termination"] = TERMINATION.get(termination, "unterminated")
    h["TerminationReason"] = termination or "unterminated"
    h["OpeningPlies"] = str(min(opening_plies, len(board.move_stack)))
    h["PlyCount"] = str(len(board.move_stack))
    if opening_plies and len(board.move_stack) >= opening_plies:
        node = game
        for _ in range(opening_plies):
            node = node.variations[0]
        node.comment = f"end of the opening ({opening_plies} random plies)"
    if termination:
        end = game.end()
        end.comment = " ".join(c for c in (end.comment, termination.replace("_", " ")) if c)
    return game


def write_game(fh: TextIO, game: chess.pgn.Game) -> None:
    print(game, file=fh, end="\n\n")
    fh.flush()
