"""The chess move vocabulary and observation encoding, checked against python-chess."""

from __future__ import annotations

import functools

import chess
import numpy as np
import pytest

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState

N_POSITIONS = 10_000


@functools.lru_cache(maxsize=1)
def random_play_positions() -> tuple[chess.Board, ...]:
    """>= 10,000 positions from seeded uniformly random games (up to 300 plies each)."""
    rng = np.random.default_rng(1234)
    boards: list[chess.Board] = []
    while len(boards) < N_POSITIONS:
        board = chess.Board()
        for _ in range(300):
            moves = list(board.legal_moves)
            if not moves:
                break
            boards.append(board.copy(stack=False))
            board.push(moves[int(rng.integers(len(moves)))])
    return tuple(boards)


def test_vocabulary_is_the_standard_1968_moves():
    assert enc.N_ACTIONS == 1968 == len(set(enc.UCI))
    for uci in ("e2e4", "g1f3", "e1g1", "e1c1", "a7a8q", "a7b8n", "h2h1r", "b2a1b", "a1h8", "h1a8"):
        assert uci in enc.UCI
    assert "a7a8" in enc.UCI  # the from-to pair stays (a rook or queen can play it)
    assert "a6a8q" not in enc.UCI and "e2f5" not in enc.UCI and "e1e1" not in enc.UCI
    for a in (0, 100, 1967):
        for turn in (chess.WHITE, chess.BLACK):
            assert enc.move_to_action(enc.action_to_move(a, turn), turn) == a


def test_every_legal_move_round_trips_and_masks_match_python_chess():
    boards = random_play_positions()
    assert len(boards) >= N_POSITIONS
    game = ChessGame(reward="none")
    seen = {
        "castle_K_white": 0,
        "castle_Q_white": 0,
        "castle_K_black": 0,
        "castle_Q_black": 0,
        "ep_white": 0,
        "ep_black": 0,
    }
    for color in ("white", "black"):
        for piece in "qrbn":
            seen[f"promote_{piece}_{color}"] = 0
    checked_moves = 0
    for start in range(0, len(boards), 500):
        chunk = boards[start : start + 500]
        obs = game.observe([ChessState(b) for b in chunk])
        for board, mask in zip(chunk, obs.action_mask):
            legal = list(board.legal_moves)
            assert mask.sum() == len(legal), board.fen()
            actions = set()
            color = "white" if board.turn else "black"
            for move in legal:
                a = enc.move_to_action(move, board.turn)
                assert enc.action_to_move(a, board.turn) == move
                assert mask[a], (board.fen(), move.uci())
                actions.add(a)
                if board.is_castling(move):
                    seen[f"castle_{'K' if board.is_kingside_castling(move) else 'Q'}_{color}"] += 1
                elif board.is_en_passant(move):
                    seen[f"ep_{color}"] += 1
                elif move.promotion:
                    seen[f"promote_{chess.piece_symbol(move.promotion)}_{color}"] += 1
            assert actions == set(np.flatnonzero(mask).tolist())
            checked_moves += len(legal)
    assert all(count > 0 for count in seen.values()), seen
    assert checked_moves > 200_000
    # Moves played by black are the mirror images of white's: the promotion actions used are
    # always the rank-7-to-8 ones.
    assert enc.move_to_action(chess.Move.from_uci("e2e1q"), chess.BLACK) == enc.UCI.index("e7e8q")
    assert enc.move_to_action(chess.Move.from_uci("e7e5"), chess.BLACK) == enc.UCI.index("e2e4")


def test_observation_is_colour_symmetric():
    """A position and its colour-mirrored twin are the same situation for the side to move."""
    boards = random_play_positions()[::50]
    game = ChessGame(reward="none")
    obs = game.observe([ChessState(b) for b in boards])
    twins = game.observe([ChessState(b.mirror()) for b in boards])
    np.testing.assert_array_equal(obs.tokens, twins.tokens)
    np.testing.assert_array_equal(obs.action_mask, twins.action_mask)
    assert not np.array_equal(obs.to_play, twins.to_play)


def test_tokens_spell_out_the_position():
    game = ChessGame(reward="none")
    board = chess.Board()
    board.push_san("e4")  # black to move: mirrored, black's pieces are "own" on ranks 1-2
    tokens = game.observe([ChessState(board)]).tokens[0]
    assert tokens.shape == (enc.OBS_LEN,) and tokens.min() >= 0 and tokens.max() < enc.OBS_VOCAB
    assert enc.tokens_to_str(tokens).splitlines() == [
        "rnbqkbnr",
        "pppp.ppp",
        "........",
        "....p...",
        "........",
        "........",
        "PPPPPPPP",
        "RNBQKBNR",
    ]
    assert list(tokens[64:68]) == [14, 16, 18, 20]  # all four castling rights
    assert tokens[68] == enc.TOK_EP  # e3 is not capturable: no en passant token
    board.push_san("d5")
    board.push_san("e5")
    board.push_san("f5")  # white may take e.p. on f6
    tokens = game.observe([ChessState(board)]).tokens[0]
    assert tokens[68] == enc.TOK_EP + 1 + chess.FILE_NAMES.index("f")
    start = game.observe([ChessState(chess.Board("4k3/8/8/8/8/8/8/4K2R w K - 57 80"))]).tokens[0]
    assert list(start[64:68]) == [14, 15, 17, 19]
    assert start[69] == enc.TOK_HALFMOVE + 5


@pytest.mark.parametrize(
    "moves,reps",
    [([], 0), (["Nf3", "Nf6", "Ng1", "Ng8"], 1), (["Nf3", "Nf6", "Ng1", "Ng8"] * 2, 2)],
)
def test_repetition_token(moves, reps):
    board = chess.Board()
    for san in moves:
        board.push_san(san)
    tokens = ChessGame(reward="none").observe([ChessState(board)]).tokens[0]
    assert tokens[70] == enc.TOK_REPETITION + reps


def test_attack_features_count_each_sides_attackers_from_the_movers_view():
    """features = "attacks": every square token is piece + 13 * (opp + 3 * own), with opp/own
    python-chess's attacker counts capped at 2, on the side to move's (mirrored) board; the
    other tokens are the piece encoding's, shifted by 104; a colour-mirrored twin gives the
    same tokens."""
    boards = random_play_positions()[::20]
    plain = ChessGame(reward="none").observe([ChessState(b) for b in boards]).tokens
    game = ChessGame(reward="none", features="attacks")
    assert game.obs_vocab == enc.OBS_VOCAB_ATTACKS == 148
    tokens = game.observe([ChessState(b) for b in boards]).tokens
    assert tokens.min() >= 0 and tokens.max() < game.obs_vocab
    shift = enc.N_ATTACK_SQUARE_TOKENS - enc.N_SQUARE_TOKENS
    assert np.array_equal(tokens[:, 64:], plain[:, 64:] + shift)
    assert np.array_equal(tokens[:, :64] % enc.N_SQUARE_TOKENS, plain[:, :64])
    seen = set()
    for board, row in zip(boards, tokens):
        me = board.turn
        for sq in chess.SQUARES:
            real = sq if me == chess.WHITE else chess.square_mirror(sq)  # token i is square i
            own = min(len(board.attackers(me, real)), 2)
            opp = min(len(board.attackers(not me, real)), 2)
            assert row[sq] // enc.N_SQUARE_TOKENS == opp + 3 * own, (board.fen(), sq)
            seen.add((own, opp))
        twin = game.observe([ChessState(board.mirror())]).tokens[0]
        assert np.array_equal(twin[:64], row[:64])
    assert len(seen) == 9  # every combination of counts occurs


_CHECK_KIND = {chess.KNIGHT: {1}, chess.BISHOP: {2}, chess.ROOK: {3}, chess.QUEEN: {2, 3}}


def test_check_features_mark_exactly_the_direct_checks():
    """features = "checks": a legal move gives a direct check (python-chess: the moved piece
    is among the checkers after the move) exactly when its piece (a promotion's new piece)
    matches its to-square's kind: a knight on a knight square, a bishop or queen on a clear
    diagonal, a rook or queen on a clear line, a pawn on a diagonal square in front of the
    king (except a promotion whose pawn stood on the line itself); the attack part and the
    other tokens are the attack encoding's, shifted."""
    boards = random_play_positions()[::5]
    game = ChessGame(reward="none", features="checks")
    assert game.obs_vocab == enc.OBS_VOCAB_CHECKS == 499
    tokens = game.observe([ChessState(b) for b in boards]).tokens
    attacks = (
        ChessGame(reward="none", features="attacks").observe([ChessState(b) for b in boards]).tokens
    )
    assert tokens.min() >= 0 and tokens.max() < game.obs_vocab
    shift = enc.N_CHECK_SQUARE_TOKENS - enc.N_ATTACK_SQUARE_TOKENS
    assert np.array_equal(tokens[:, 64:], attacks[:, 64:] + shift)
    assert np.array_equal(tokens[:, :64] % enc.N_ATTACK_SQUARE_TOKENS, attacks[:, :64])
    checked = 0
    seen: set[int] = set()
    for board, row in zip(boards, tokens):
        me = board.turn
        king = board.king(not me)
        for move in board.legal_moves:
            if board.is_castling(move) or board.is_en_passant(move):
                continue
            piece = move.promotion or board.piece_type_at(move.from_square)
            if piece == chess.KING:
                continue
            if move.promotion and chess.BB_SQUARES[move.from_square] & chess.between(
                move.to_square, king
            ):
                continue  # the promoting pawn itself blocked the line (documented)
            to = move.to_square if me == chess.WHITE else chess.square_mirror(move.to_square)
            kind = int(row[to]) // enc.N_ATTACK_SQUARE_TOKENS
            seen.add(kind)
            if piece == chess.PAWN:
                front = chess.BB_PAWN_ATTACKS[not me][king] & chess.BB_SQUARES[move.to_square]
                predicted = kind == 2 and bool(front)
            else:
                predicted = kind in _CHECK_KIND[piece]
            board.push(move)
            direct = bool(board.checkers() & chess.BB_SQUARES[move.to_square])
            board.pop()
            assert predicted == direct, (board.fen(), move.uci(), kind)
            checked += direct
        twin = game.observe([ChessState(board.mirror())]).tokens[0]
        assert np.array_equal(twin[:64], row[:64])
    assert seen == {0, 1, 2, 3} and checked > 50, (seen, checked)


def test_a_policy_tells_its_encoding_by_its_vocabulary():
    from chessrl.policy import Policy

    big = Policy(enc.OBS_VOCAB_ATTACKS, enc.OBS_LEN, enc.N_ACTIONS, 32, 1, 2, 64)
    assert enc.features_of(big) == "attacks"
    assert enc.features_of(Policy(enc.OBS_VOCAB, enc.OBS_LEN, enc.N_ACTIONS, 32, 1, 2, 64)) == (
        "pieces"
    )
    assert enc.features_of(object()) == "pieces"
    checks = Policy(enc.OBS_VOCAB_CHECKS, enc.OBS_LEN, enc.N_ACTIONS, 32, 1, 2, 64)
    assert enc.features_of(checks) == "checks"
    assert enc.features_of({"obs_vocab": enc.OBS_VOCAB_CHECKS}) == "checks"
