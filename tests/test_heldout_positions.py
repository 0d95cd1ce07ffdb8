"""Positions nobody trained on: hand-picked edge cases through the encoding, the game rules, the
start file, the Gym view, the reward engine and the UCI engine (real python-chess and Stockfish,
no mocks)."""

from __future__ import annotations

import io
import os

import chess
import chess.engine
import numpy as np
import pytest
import torch

import chessrl  # noqa: F401 - registers the Gymnasium ids
from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState
from chessrl.envs.chess.stockfish import CLOCK_EXACT, StockfishPool, mate_value
from chessrl.errors import UserError
from chessrl.policy import Policy

STOCKFISH = "/usr/games/stockfish"
needs_stockfish = pytest.mark.skipif(
    not os.access(STOCKFISH, os.X_OK), reason="needs Debian's stockfish"
)

# (what it is, FEN): every one is given with white and, mirrored, with black to move
EDGE_POSITIONS = [
    ("under-promotions", "1n2k3/P7/8/8/8/8/8/4K3 w - - 0 1"),
    ("capture-promotions both sides", "r1n1k3/1P6/8/8/8/8/1p6/R1N1K3 w - - 0 1"),
    ("en passant legal", "4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 2"),
    ("en passant square, capture pinned", "8/8/8/K2pP2r/8/8/8/7k w - d6 0 2"),
    ("en passant square, no capturer", "4k3/8/8/3p4/8/8/8/4K3 w - d6 0 2"),
    ("en passant evades check", "8/8/8/3pP3/4K3/8/8/7k w - d6 0 2"),
    ("castling both sides", "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1"),
    ("castling blocked", "rn2k1nr/8/8/8/8/8/8/RN2K1NR w KQkq - 0 1"),
    ("castling through check", "r3k2r/8/8/8/8/8/5r2/R3K2R w KQkq - 0 1"),
    ("castling out of check", "r3k2r/8/8/8/4r3/8/8/R3K2R w KQkq - 0 1"),
    ("queen side, b1 attacked only", "r3k2r/8/8/8/8/8/8/Rr2K2R w KQk - 0 1"),
    ("double check, one move", "4k3/8/8/8/8/8/4r3/r3K3 w - - 0 1"),
    ("checkmated", "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3"),
    ("stalemated", "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1"),
    ("kings only", "8/8/8/4k3/8/8/8/4K3 w - - 0 1"),
    ("halfmove clock 99", "8/8/8/4k3/8/8/8/R3K3 w - - 99 150"),
    ("halfmove clock 100", "8/8/8/4k3/8/8/8/R3K3 w - - 100 150"),
    ("fullmove 500", "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 5 500"),
]


def _both_colours():
    for name, fen in EDGE_POSITIONS:
        board = chess.Board(fen)
        yield f"{name} (white)" if board.turn else f"{name} (black)", board
        mirrored = board.mirror()
        yield f"{name} (white)" if mirrored.turn else f"{name} (black)", mirrored


def test_edge_positions_mask_equals_legal_moves_and_every_move_round_trips():
    game = ChessGame(reward="none", benchmark=False)
    named = list(_both_colours())
    obs = game.observe([ChessState(b.copy()) for _, b in named])
    kinds = set()
    for (name, board), mask in zip(named, obs.action_mask):
        legal = list(board.legal_moves)
        actions = {enc.move_to_action(m, board.turn) for m in legal}
        assert actions == set(np.flatnonzero(mask).tolist()), name
        for m in legal:
            assert enc.action_to_move(enc.move_to_action(m, board.turn), board.turn) == m, name
            if m.promotion:
                kinds.add(("promo", m.promotion, board.turn, board.is_capture(m)))
            if board.is_castling(m):
                kinds.add(("castle", board.is_kingside_castling(m), board.turn))
            if board.is_en_passant(m):
                kinds.add(("ep", board.turn))
    assert len([k for k in kinds if k[0] == "promo"]) == 16  # 4 pieces x 2 colours x capture
    assert len([k for k in kinds if k[0] == "castle"]) == 4 and len(kinds) == 22
    # a position and its colour-mirrored twin look the same to the side to move
    np.testing.assert_array_equal(obs.tokens[0::2], obs.tokens[1::2])
    np.testing.assert_array_equal(obs.action_mask[0::2], obs.action_mask[1::2])
    reasons = dict(zip((n for n, _ in named), obs.reason))
    assert reasons["checkmated (white)"] == "checkmate"
    assert reasons["stalemated (black)"] == "stalemate"
    assert reasons["kings only (black)"] == "insufficient_material"
    assert reasons["halfmove clock 99 (white)"] == ""
    assert reasons["halfmove clock 100 (black)"] == "fifty_moves"
    ep = {n: t[68] for n, t in zip(reasons, obs.tokens)}
    assert ep["en passant legal (white)"] == ep["en passant evades check (black)"] == enc.TOK_EP + 4
    assert ep["en passant square, capture pinned (white)"] == enc.TOK_EP
    assert ep["en passant square, no capturer (black)"] == enc.TOK_EP


def test_castling_tokens_show_only_rights_a_move_can_use():
    """A FEN may name castling rights whose king or rook is gone (python-chess keeps them on
    the board but never castles with them); the tokens are those of the cleaned rights."""
    game = ChessGame(reward="none", benchmark=False)
    raw = chess.Board("4k2r/8/8/8/8/8/8/4K3 w KQkq - 0 1")  # only black's king side is real
    clean = chess.Board("4k2r/8/8/8/8/8/8/4K3 w k - 0 1")
    a, b = game.observe([ChessState(raw), ChessState(clean)]).tokens
    np.testing.assert_array_equal(a, b)
    assert a[64:68].tolist() == [enc.TOK_CASTLE, enc.TOK_CASTLE + 2, enc.TOK_CASTLE + 5, 19]


def test_play_refuses_actions_outside_the_vocabulary_and_moves_after_a_rule_draw():
    game = ChessGame(reward="none", benchmark=False)
    board = chess.Board("7R/8/8/8/8/8/8/k1K5 w - - 0 1")
    last = enc.N_ACTIONS - 1
    assert enc.action_to_move(last, chess.WHITE) in board.legal_moves  # h8g8 is legal here
    for observed in (False, True):
        for bad in (-1, enc.N_ACTIONS, 10**6):
            state = ChessState(board.copy())
            if observed:
                game.observe([state])
            with pytest.raises(ValueError, match="illegal action"):
                game.play([state], np.array([bad]))
            assert state.board.fen() == board.fen()
    # drawn by rule (moves remain on the board): refused observed or not, like a mate
    for fen in ("8/8/8/4k3/8/8/8/R3K3 w - - 100 150", "8/8/8/4k3/8/8/8/3BK3 w - - 0 1"):
        for observed in (False, True):
            state = ChessState(chess.Board(fen))
            if observed:
                assert game.observe([state]).terminated[0]
            a = enc.move_to_action(next(iter(state.board.legal_moves)), chess.WHITE)
            with pytest.raises(ValueError, match="illegal action"):
                game.play([state], np.array([a]))


def test_reset_options_refuse_a_moves_string_and_null_moves():
    game = ChessGame(reward="none", benchmark=False)
    with pytest.raises(ValueError, match="'moves' must be a list"):
        game.state_from_options({"moves": "e2e4"})
    with pytest.raises(ValueError, match="illegal move '0000'"):
        game.state_from_options({"moves": ["e2e4", "0000"]})
    state = game.state_from_options({"moves": ("e2e4", "c7c5")})
    assert state.board.fen().startswith("rnbqkbnr/pp1ppppp/8/2p5/4P3")


def test_start_file_refuses_positions_already_drawn_by_rule(tmp_path):
    for line, why in (
        ("8/8/8/4k3/8/8/8/4K3 w - - 0 1", "insufficient_material"),
        ("8/8/8/4k3/8/8/8/R3K3 b - - 100 150", "fifty_moves"),
        ("8/8/8/4k3/8/8/8/R3K3 w - - hmvc 120;", "fifty_moves"),
        ("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", "no legal moves"),
    ):
        path = tmp_path / "starts.epd"
        path.write_text(f"8/8/8/4k3/8/8/8/R3K3 w - - 99 150\n{line}\n")
        with pytest.raises(UserError, match=rf"^{path}:2: bad start position .*{why}"):
            ChessGame(reward="none", start="file", start_file=str(path))
    path.write_text("8/8/8/4k3/8/8/8/R3K3 w - - 99 150\n")  # one ply from the rule: playable
    game = ChessGame(reward="none", start="file", start_file=str(path), benchmark=False)
    (root,) = game.initial_states(1, np.random.default_rng(0))
    assert root.board.halfmove_clock == 99 and not game.observe([root]).terminated[0]


def test_gym_view_black_mates_and_finished_fens_are_refused():
    import gymnasium as gym

    env = gym.make("chessrl/Chess-v0", reward="none", benchmark=False).unwrapped
    try:
        env.reset(options={"fen": "r5k1/8/8/8/8/8/5PPP/6K1 b - - 0 1"})
        mate = enc.move_to_action(chess.Move.from_uci("a8a1"), chess.BLACK)
        _, reward, terminated, truncated, info = env.step(mate)
        assert (reward, terminated, truncated, info["reason"]) == (1.0, True, False, "checkmate")
        for fen in (
            "8/8/8/4k3/8/8/8/4K3 b - - 0 1",
            "8/8/8/4k3/8/8/8/R3K3 w - - 100 150",
            "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1",
        ):
            with pytest.raises(ValueError):
                env.reset(options={"fen": fen})
    finally:
        env.close()


@needs_stockfish
def test_values_are_a_function_of_the_position_whatever_the_search_order():
    """The cache key ignores early move counters, so the search must ignore them too: the same
    position with halfmove clocks 0 and 3 gets one value whichever is searched first; from
    CLOCK_EXACT on the clock is part of the key (the fifty-move rule is near)."""
    base = "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq -"
    early = [chess.Board(f"{base} {c} 3") for c in (0, 3)]
    late = [chess.Board(f"{base} {c} 60") for c in (CLOCK_EXACT, 90)]
    ep_unused = chess.Board("rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPP/RNBQKBNR w KQkq e6 0 2")
    no_ep = chess.Board("rnbqkbnr/pppp1ppp/8/4p3/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 0 2")
    boards = early + late + [ep_unused, no_ep]
    runs = []
    for order in (range(len(boards)), reversed(range(len(boards)))):
        pool = StockfishPool(STOCKFISH, engines=1, depth=5)
        try:
            out = {}
            for i in order:  # one board per call: the cache decides what a repeat gets
                out[i] = float(pool.values([boards[i]])[0])
            runs.append([out[i] for i in range(len(boards))])
            assert pool.evaluations == 4  # early pair, two late clocks, the e.p. pair
        finally:
            pool.close()
    assert runs[0] == runs[1]
    v = runs[0]
    assert v[0] == v[1] and v[4] == v[5] and v[2] != v[3]


@needs_stockfish
def test_engine_values_of_mates_and_draws_from_both_sides():
    pool = StockfishPool(STOCKFISH, engines=1, depth=6, cache_size=0)
    try:
        cases = {
            "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1": mate_value(1),  # mates in one
            "6k1/5ppp/8/8/8/8/5PPP/r5K1 b - - 0 1": mate_value(1),  # black mates in one
            "6k1/5ppp/8/8/8/8/5PPP/r5K1 w - - 0 1": -1.0,  # checkmated (the engine says so too)
            "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1": 0.0,  # stalemated
            "8/8/8/8/8/6k1/5q2/7K w - - 0 1": 0.0,  # stalemated, white
        }
        boards = [chess.Board(f) for f in cases]
        boards += [b.mirror() for b in boards]  # the same from the other side
        values = pool.values(boards)
        want = np.array(list(cases.values()) * 2, dtype=np.float32)
        np.testing.assert_array_equal(values, want)
        # a shorter mate is worth more, and the side to move's view flips with the turn
        two = chess.Board("7k/8/8/8/8/8/R7/1R4K1 w - - 0 1")  # Ra7 Kg8 Rb8#
        lost = chess.Board("7k/8/8/8/8/8/R7/1R4K1 b - - 0 1")
        m2, v_lost = pool.values([two, lost])
        assert m2 == np.float32(mate_value(2)) and values[0] > m2 > 0.9
        assert v_lost < -0.5  # black to move, lost: negative for the side to move
        before = pool.restarts
        for finished in (boards[2], boards[3], boards[4], boards[7]):
            with pytest.raises(ValueError, match="no legal move"):
                pool.best_moves([chess.Board(), finished], 1)
            with pytest.raises(ValueError, match="no legal move"):
                pool.analyse_multipv([finished], chess.engine.Limit(depth=1), 2)
        assert pool.restarts == before  # refused up front: no engine was restarted
    finally:
        pool.close()


def test_uci_answers_a_move_in_a_position_drawn_by_rule_and_0000_only_without_one(tmp_path):
    from chessrl.envs.chess.uci import UciEngine

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(44, 71, 1968, 16, 1, 2, 32)
    path = tmp_path / "step_0000001.pt"
    torch.save(
        {
            "policy": policy.state_dict(),
            "game": "chess",
            "step": 1,
            "policy_sizes": dict(policy.sizes),
            "config": {"env": {"name": "chess", "depth": 2, "start": "standard"}},
        },
        path,
    )
    out = io.StringIO()
    engine = UciEngine(path, out=out)
    for fen, legal in (
        ("8/8/8/4k3/8/8/8/3BK3 w - - 0 1", True),  # insufficient material: moves remain
        ("8/8/8/4k3/8/8/8/R3K3 w - - 150 200", True),  # past the 75-move rule
        ("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", False),  # stalemate
    ):
        out.seek(0)
        out.truncate()
        engine.handle(f"position fen {fen}")
        engine.handle("go movetime 10")
        move = out.getvalue().split()[-1]
        if legal:
            assert chess.Move.from_uci(move) in chess.Board(fen).legal_moves, (fen, move)
        else:
            assert move == "0000"
