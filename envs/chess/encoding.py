"""The chess move vocabulary and the board encoding, both from the side to move's view.

Move vocabulary
    1968 UCI moves: every queen-like from-to pair (1456) and every knight from-to pair (336)
    on an empty board, plus the promotions of a pawn from the 7th to the 8th rank and from
    the 2nd to the 1st rank (straight or capturing) to each of q, r, b, n (2 x 22 x 4 = 176).
    Castling is the king's two-square move (``e1g1``), as in UCI.

Perspective
    When black is to move the board is mirrored vertically (rank r -> 9 - r, colours
    swapped), so the side to move always plays "up the board" and one policy plays both
    colours. Action ``a`` therefore means ``MOVES[a]`` for white and the mirrored move for
    black (``e7e5`` for black is action ``e2e4``). :data:`ACTION_MOVES` gives the real move per
    colour and :func:`move_to_action` / :func:`action_to_move` convert.

Observation tokens (:data:`OBS_LEN` = 71, :data:`OBS_VOCAB` = 44; no padding id, every
observation has the same length)
    0..63   squares a1..h8 of the mirrored board: 0 empty, 1..6 own P N B R Q K,
            7..12 opponent P N B R Q K
    64..67  castling rights: own king side (13/14 = no/yes), own queen side (15/16),
            opponent king side (17/18), opponent queen side (19/20)
    68      en passant file, only if an en passant capture is legal: 21 none, 22..29 a..h
    69      halfmove clock bucket min(clock // 10, 10): 30..40 (the fifty-move rule)
    70      repetitions of this position so far: 41 first time, 42 second, 43 third

Attack features (the ``[env] features = "attacks"`` option; :data:`OBS_VOCAB_ATTACKS` = 148)
    A square's token also says how often each side attacks it, 0, 1 or 2+ times (python-chess
    ``attacks_mask`` of every piece: pins and x-rays are not considered):
    ``piece + 13 * (opponent_attacks + 3 * own_attacks)``, 0..116; the other tokens keep their
    meaning, shifted by 104 (castling 117.., en passant 125.., clock 134.., repetitions 145..).
    Whether a piece hangs, a square is safe or a king's flight squares are covered is then
    read off one token instead of being inferred from the pieces' geometry by attention.

Check features (``features = "checks"``; :data:`OBS_VOCAB_CHECKS` = 499)
    The attack token plus which of the side to move's pieces would give check from the square
    to the opponent's king: ``attack_token + 117 * kind``, kind 0 none, 1 a knight's jump
    from the king, 2 a diagonal with nothing between the square and the king (a bishop or a
    queen checks from it, and a pawn from the two squares diagonally in front of the king),
    3 a rank or file with nothing between (a rook or a queen). The three kinds never share a
    square, so one token holds them. A move gives a direct check exactly when its piece (the
    promotion piece for a promotion) matches its to-square's kind, except a promotion whose
    pawn stood on the line to the king itself; discovered checks are not marked. The other
    tokens are shifted by 455 (castling 468.., en passant 476.., clock 485.., repetitions
    496..).
"""

from __future__ import annotations

from typing import Sequence

import chess
import numpy as np

# --- vocabulary ------------------------------------------------------------------------

_QUEEN_DIRS = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]
_KNIGHT_DIRS = [(1, 2), (2, 1), (2, -1), (1, -2), (-1, -2), (-2, -1), (-2, 1), (-1, 2)]
_PROMOTIONS = (chess.QUEEN, chess.ROOK, chess.BISHOP, chess.KNIGHT)


def _build_vocabulary() -> list[chess.Move]:
    """The 1968 moves in a fixed, documented order (from-square major)."""
    moves: list[chess.Move] = []
    for frm in chess.SQUARES:
        f, r = chess.square_file(frm), chess.square_rank(frm)
        targets = []
        for df, dr in _QUEEN_DIRS:
            for dist in range(1, 8):
                tf, tr = f + df * dist, r + dr * dist
                if not (0 <= tf < 8 and 0 <= tr < 8):
                    break
                targets.append(chess.square(tf, tr))
        for df, dr in _KNIGHT_DIRS:
            tf, tr = f + df, r + dr
            if 0 <= tf < 8 and 0 <= tr < 8:
                targets.append(chess.square(tf, tr))
        moves.extend(chess.Move(frm, to) for to in sorted(targets))
        # Promotions: white pawns on rank 7, black pawns on rank 2 (the vocabulary is the
        # standard colour-complete one even though mirroring only ever uses rank 7 -> 8).
        if r in (1, 6):
            tr = 7 if r == 6 else 0
            for df in (-1, 0, 1):
                if 0 <= f + df < 8:
                    to = chess.square(f + df, tr)
                    moves.extend(chess.Move(frm, to, promotion=p) for p in _PROMOTIONS)
    return moves


MOVES: list[chess.Move] = _build_vocabulary()
N_ACTIONS: int = len(MOVES)
assert N_ACTIONS == 1968, N_ACTIONS

UCI: list[str] = [m.uci() for m in MOVES]

# ACTION_STRUCTURE[a] = (from-square, to-square, kind) of MOVES[a] on the side to move's board:
# the square indices are the observation's square tokens, kind 0 = no promotion, 1..4 = q r b n.
ACTION_STRUCTURE = np.array(
    [
        (
            m.from_square,
            m.to_square,
            0 if m.promotion is None else 1 + _PROMOTIONS.index(m.promotion),
        )
        for m in MOVES
    ],
    dtype=np.int64,
)


def _key(frm: int, to: int, promotion: int | None) -> int:
    """A dense integer key of a move: 6 bits from, 6 bits to, 3 bits promotion piece."""
    return frm | (to << 6) | ((promotion or 0) << 12)


_N_KEYS = 1 << 15


def _mirror_move(m: chess.Move) -> chess.Move:
    return chess.Move(
        chess.square_mirror(m.from_square), chess.square_mirror(m.to_square), m.promotion
    )


# ACTION_MOVES[color][a]: the real move that action a means when `color` is to move.
ACTION_MOVES: dict[bool, list[chess.Move]] = {
    chess.WHITE: list(MOVES),
    chess.BLACK: [_mirror_move(m) for m in MOVES],
}

# KEY_TO_ACTION[color][key]: the action of a real move (by _key), -1 where not in the vocabulary.
# Index 0 is black, 1 is white, so `KEY_TO_ACTION[int(board.turn)]` works.
KEY_TO_ACTION = np.full((2, _N_KEYS), -1, dtype=np.int64)
for _color in (chess.WHITE, chess.BLACK):
    for _a, _m in enumerate(ACTION_MOVES[_color]):
        KEY_TO_ACTION[int(_color), _key(_m.from_square, _m.to_square, _m.promotion)] = _a


def move_to_action(move: chess.Move, turn: chess.Color) -> int:
    """The action index of the real ``move`` played by ``turn``; ValueError if not in the
    vocabulary."""
    a = int(KEY_TO_ACTION[int(turn), _key(move.from_square, move.to_square, move.promotion)])
    if a < 0:
        raise ValueError(f"move {move.uci()} is not in the chess action vocabulary")
    return a


def action_to_move(action: int, turn: chess.Color) -> chess.Move:
    """The real move that ``action`` means when ``turn`` is to move."""
    return ACTION_MOVES[turn][action]


# --- observation tokens ------------------------------------------------------------------

N_SQUARE_TOKENS = 13
TOK_CASTLE = 13  # + 2 * slot + has_right, slot in (own K, own Q, opp K, opp Q)
TOK_EP = 21  # + 0 none, + 1 + file
TOK_HALFMOVE = 30  # + min(clock // 10, 10)
TOK_REPETITION = 41  # + min(times seen before, 2)
OBS_LEN = 64 + 4 + 1 + 1 + 1
OBS_VOCAB = 44
N_ATTACK_SQUARE_TOKENS = N_SQUARE_TOKENS * 9  # piece x opponent attacks x own attacks (0/1/2+)
OBS_VOCAB_ATTACKS = OBS_VOCAB + N_ATTACK_SQUARE_TOKENS - N_SQUARE_TOKENS
N_CHECK_KINDS = 4  # none, knight jump, clear diagonal, clear rank/file to the opponent's king
N_CHECK_SQUARE_TOKENS = N_ATTACK_SQUARE_TOKENS * N_CHECK_KINDS
OBS_VOCAB_CHECKS = OBS_VOCAB + N_CHECK_SQUARE_TOKENS - N_SQUARE_TOKENS
FEATURES = ("pieces", "attacks", "checks")
_SQUARE_TOKENS = {
    "pieces": N_SQUARE_TOKENS,
    "attacks": N_ATTACK_SQUARE_TOKENS,
    "checks": N_CHECK_SQUARE_TOKENS,
}
_VOCABS = {name: OBS_VOCAB + n - N_SQUARE_TOKENS for name, n in _SQUARE_TOKENS.items()}


def obs_vocab(features: str) -> int:
    """The observation vocabulary of an encoding (one of :data:`FEATURES`)."""
    return _VOCABS[features]


def square_tokens(features: str) -> int:
    """How many distinct square tokens an encoding has (the other tokens start there)."""
    return _SQUARE_TOKENS[features]


def features_of(policy: object) -> str:
    """The encoding a policy (or a checkpoint's ``policy_sizes`` dict) was built for, told by
    its observation vocabulary."""
    if isinstance(policy, dict):
        sizes = policy
    else:
        sizes = getattr(getattr(policy, "module", policy), "sizes", None) or {}
    vocab = sizes.get("obs_vocab")
    return next((name for name, v in _VOCABS.items() if v == vocab), "pieces")


_PIECE_IDS = np.arange(1, 13, dtype=np.uint8)[None, :, None]
_H1, _A1, _H8, _A8 = (
    np.uint64(chess.BB_H1),
    np.uint64(chess.BB_A1),
    np.uint64(chess.BB_H8),
    np.uint64(chess.BB_A8),
)


def attack_counts(board: chess.Board) -> tuple[int, int, int, int]:
    """Bitboards of the squares white attacks at least once and at least twice, then black's."""
    out: list[int] = []
    for color in (chess.WHITE, chess.BLACK):
        once = twice = 0
        for sq in chess.scan_forward(board.occupied_co[color]):
            m = board.attacks_mask(sq)
            twice |= once & m
            once |= m
        out += [once, twice]
    return out[0], out[1], out[2], out[3]


def check_squares(board: chess.Board) -> tuple[int, int, int]:
    """Bitboards of the squares from which a piece of the side to move would attack the
    opponent's king: a knight's jump, a clear diagonal, a clear rank or file (each line up to
    and including its first occupied square). Zeros when that king is missing."""
    king = board.king(not board.turn)
    if king is None:
        return 0, 0, 0
    occ = board.occupied
    diag = chess.BB_DIAG_ATTACKS[king][chess.BB_DIAG_MASKS[king] & occ]
    orth = (
        chess.BB_RANK_ATTACKS[king][chess.BB_RANK_MASKS[king] & occ]
        | chess.BB_FILE_ATTACKS[king][chess.BB_FILE_MASKS[king] & occ]
    )
    return chess.BB_KNIGHT_ATTACKS[king], diag, orth


def board_features(
    board: chess.Board, ep_legal: bool, repetitions: int, features: str = "pieces"
) -> tuple[int, ...]:
    """The raw integers :func:`encode` needs from one board (cheap attribute reads only) in
    the encoding ``features``: ``"attacks"`` appends :func:`attack_counts`, ``"checks"`` also
    :func:`check_squares`."""
    occ = board.occupied_co
    extra: tuple[int, ...] = ()
    if features != "pieces":
        extra = attack_counts(board)
    if features == "checks":
        extra += check_squares(board)
    return (
        board.pawns,
        board.knights,
        board.bishops,
        board.rooks,
        board.queens,
        board.kings,
        occ[chess.WHITE],
        occ[chess.BLACK],
        # the rights a move can still use: a board set from a FEN keeps the FEN's rights even
        # where the king or rook has gone (python-chess ignores those when it generates moves)
        board.clean_castling_rights() if board.castling_rights else 0,
        (board.ep_square if ep_legal and board.ep_square is not None else 64),
        board.halfmove_clock,
        int(board.turn),
        repetitions,
        *extra,
    )


def encode(features: Sequence[tuple[int, ...]]) -> np.ndarray:
    """int64 [n, OBS_LEN] tokens from :func:`board_features` rows, vectorised over the batch.

    Bitboards are mirrored for black with a byte swap (a vertical flip) and expanded to
    squares with ``np.unpackbits``; no Python loop over squares.
    """
    n = len(features)
    width = len(features[0]) if n else 13
    f = np.array(features, dtype=np.uint64).reshape(n, width)
    white_to_move = f[:, 11].astype(bool)
    pieces = f[:, 0:6]
    own = np.where(white_to_move, f[:, 6], f[:, 7])
    opp = np.where(white_to_move, f[:, 7], f[:, 6])
    planes = np.concatenate([pieces & own[:, None], pieces & opp[:, None]], axis=1)  # [n, 12]
    black = ~white_to_move
    planes[black] = planes[black].byteswap()  # vertical mirror: rank r <-> rank 7 - r
    bits = np.unpackbits(
        planes.view(np.uint8).reshape(n, 12, 8), axis=2, bitorder="little"
    )  # [n,12,64]
    tokens = np.empty((n, OBS_LEN), dtype=np.int64)
    tokens[:, :64] = (bits * _PIECE_IDS).sum(axis=1, dtype=np.int64)
    shift = 0
    if width >= 17:  # attack counts: own once/twice, opponent once/twice, mirrored like pieces
        att = np.stack(
            [
                np.where(white_to_move, f[:, 13], f[:, 15]),
                np.where(white_to_move, f[:, 14], f[:, 16]),
                np.where(white_to_move, f[:, 15], f[:, 13]),
                np.where(white_to_move, f[:, 16], f[:, 14]),
            ],
            axis=1,
        )
        att[black] = att[black].byteswap()
        abits = np.unpackbits(att.view(np.uint8).reshape(n, 4, 8), axis=2, bitorder="little")
        own_n = abits[:, 0].astype(np.int64) + abits[:, 1]
        opp_n = abits[:, 2].astype(np.int64) + abits[:, 3]
        tokens[:, :64] += N_SQUARE_TOKENS * (opp_n + 3 * own_n)
        shift = N_ATTACK_SQUARE_TOKENS - N_SQUARE_TOKENS
    if width == 20:  # check squares (knight, diagonal, rank/file), mirrored like pieces
        chk = f[:, 17:20].copy()
        chk[black] = chk[black].byteswap()
        cbits = np.unpackbits(chk.view(np.uint8).reshape(n, 3, 8), axis=2, bitorder="little")
        kind = cbits[:, 0].astype(np.int64) + 2 * cbits[:, 1] + 3 * cbits[:, 2]
        tokens[:, :64] += N_ATTACK_SQUARE_TOKENS * kind
        shift = N_CHECK_SQUARE_TOKENS - N_SQUARE_TOKENS
    rights = f[:, 8]
    own_k = np.where(white_to_move, rights & _H1, rights & _H8) != 0
    own_q = np.where(white_to_move, rights & _A1, rights & _A8) != 0
    opp_k = np.where(white_to_move, rights & _H8, rights & _H1) != 0
    opp_q = np.where(white_to_move, rights & _A8, rights & _A1) != 0
    for slot, has in enumerate((own_k, own_q, opp_k, opp_q)):
        tokens[:, 64 + slot] = TOK_CASTLE + 2 * slot + has
    ep = f[:, 9].astype(np.int64)
    tokens[:, 68] = np.where(ep < 64, TOK_EP + 1 + (ep % 8), TOK_EP)
    tokens[:, 69] = TOK_HALFMOVE + np.minimum(f[:, 10].astype(np.int64) // 10, 10)
    tokens[:, 70] = TOK_REPETITION + np.minimum(f[:, 12].astype(np.int64), 2)
    tokens[:, 64:] += shift
    return tokens


_SQUARE_SYMBOLS = ".PNBRQKpnbrqk"


def tokens_to_str(tokens: np.ndarray) -> str:
    """An 8-line picture of the 64 square tokens (own pieces upper case, rank 8 on top)."""
    rows = []
    for rank in range(7, -1, -1):
        rows.append(
            "".join(
                _SQUARE_SYMBOLS[int(t) % N_SQUARE_TOKENS] for t in tokens[rank * 8 : rank * 8 + 8]
            )
        )
    return "\n".join(rows)
