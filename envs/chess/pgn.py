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


def game_record(board: chess.Board, *, white: str, black: str, result: str, termination: str,
                opening_plies: int, round_: int, event: str = "chessrl eval", site: str = "chessrl") -> chess.pgn.Game:
    """A PGN game of ``board``'s whole move stack (from its root position).

    Headers: Event, Site, Date, Round, White, Black, Result, Opening (the SAN of the first
    ``opening_plies`` plies, the random opening both colours played), OpeningPlies,
    Termination (chessrl's reason: checkmate, stalemate, insufficient_material, fifty_moves,
    threefold_repetition or adjudicated), PlyCount; a FEN/SetUp pair when the root is not
    the standard position.
    """
    game = chess.pgn.Game.from_board(board)
    root = board.root()
    opening = []
    b = root.copy(stack=False)
    for move in board.move_stack[:opening_plies]:
        opening.append(b.san(move))
        b.push(move)
    h = game.headers
    h["Event"] = event
    h["Site"] = site
    h["Date"] = _dt.date.today().strftime("%Y.%m.%d")
    h["Round"] = str(round_)
    h["White"] = white
    h["Black"] = black
    h["Result"] = result
    h["Opening"] = " ".join(opening) if opening else "(start position)"
    h["OpeningPlies"] = str(min(opening_plies, len(board.move_stack)))
    h["Termination"] = termination
    h["PlyCount"] = str(len(board.move_stack))
    if opening_plies and len(board.move_stack) >= opening_plies:
        node = game
        for _ in range(opening_plies):
            node = node.variations[0]
        node.comment = "end of opening"
    return game


def write_game(fh: TextIO, game: chess.pgn.Game) -> None:
    print(game, file=fh, end="\n\n")
    fh.flush()
