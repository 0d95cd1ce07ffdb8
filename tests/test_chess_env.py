"""The chess game through the core: plugin registration, the TorchRL env, the Gym view, rules."""

from __future__ import annotations

import random

import chess
import numpy as np
import pytest
import torch

import chessrl  # noqa: F401 - registers the Gymnasium ids
from chessrl.env import BoardGameEnv
from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState
from chessrl.envs.chess.options import ChessOptions
from chessrl.errors import UserError
from chessrl.pluginmanager import games
from chessrl.schema import build, describe


def fast_game(**overrides) -> ChessGame:
    """A game that never needs Stockfish (reward 'none')."""
    return ChessGame(reward="none", **overrides)


def test_registered_through_the_entry_point_with_documented_options():
    reg = games()["chess"]
    assert reg.schema is ChessOptions
    rows = describe(ChessOptions)
    assert all(row["help"] for row in rows)
    assert {
        "stockfish_path",
        "engines",
        "hash_mb",
        "depth",
        "nodes",
        "cache_size",
        "start",
        "start_file",
        "random_plies",
        "phase_mix",
        "max_plies",
        "engine_move_depth",
        "value_scale",
    } <= {r["key"] for r in rows}
    options = build(
        ChessOptions,
        {"reward": "none", "start": "random", "random_plies": 4, "max_plies": 50},
        prefix="env",
    )
    game = reg.obj(options, 7)
    assert isinstance(game, ChessGame) and game.max_plies == 50
    game.close()


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"depth": 4, "nodes": 1000}, "exactly one of depth"),
        ({"depth": 0}, "exactly one of depth"),
        ({"start": "book"}, "expected one of"),
        ({"phase_mix": [1.0, -1.0, 0.0]}, "phase_mix"),
        ({"start": "file"}, "start_file"),
        ({"engins": 2}, "did you mean 'engines'"),
    ],
)
def test_bad_options_are_one_line_user_errors(data, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        build(ChessOptions, data, prefix="env")
    assert "\n" not in str(info.value)


def test_gymnasium_check_env_passes():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    env = gym.make("chessrl/Chess-v0", depth=1, engines=1)
    try:
        check_env(env.unwrapped)
        obs, info = env.reset(seed=3)
        assert obs["board"].shape == (enc.OBS_LEN,) and obs["action_mask"].sum() == 20
        assert info["to_play"] == 0
    finally:
        env.close()


def test_gym_reset_from_fen_and_invalid_fen():
    import gymnasium as gym

    env = gym.make("chessrl/Chess-v0", reward="none")
    try:
        obs, info = env.reset(options={"fen": "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"})
        assert info["to_play"] == 0
        mate = enc.move_to_action(chess.Move.from_uci("a1a8"), chess.WHITE)
        _, reward, terminated, truncated, info = env.step(mate)
        assert terminated and not truncated and info["reason"] == "checkmate" and reward == 1.0
        with pytest.raises(ValueError, match="invalid FEN 'not a fen'"):
            env.reset(options={"fen": "not a fen"})
        with pytest.raises(ValueError, match="invalid FEN.*illegal position"):
            env.reset(options={"fen": "8/8/8/8/8/8/8/8 w - - 0 1"})  # no kings
    finally:
        env.close()


def test_torchrl_check_env_specs_and_identical_group_members():
    from torchrl.envs.utils import check_env_specs

    env = BoardGameEnv(fast_game(start="random", random_plies=6), batch_size=(2, 3), seed=5)
    check_env_specs(env)
    td = env.reset()
    obs = td["observation"]
    assert obs.shape == (2, 3, enc.OBS_LEN)
    for r in range(2):
        for g in range(1, 3):
            assert torch.equal(obs[r, g], obs[r, 0])
            assert env.game.state_to_str(env.states[r * 3 + g]) == env.game.state_to_str(
                env.states[r * 3]
            )
    assert not torch.equal(obs[0, 0], obs[1, 0])  # different roots (6 random plies)
    # Group members are independent copies: moving one leaves the others alone.
    env.states[0].board.push(next(iter(env.states[0].board.legal_moves)))
    assert env.states[1].board.fen() != env.states[0].board.fen()


def test_env_truncates_at_max_plies_with_legal_random_play():
    env = BoardGameEnv(fast_game(max_plies=5), batch_size=(2, 2), seed=0)
    td = env.reset()
    for ply in range(1, 6):
        td = env.step(env.rand_action(td))  # rand_action draws from the legal-move mask
        nxt = td["next"]
        assert (nxt["ply"] == ply).all()
        assert bool(nxt["truncated"].all()) == (ply == 5) and not nxt["terminated"].any()
        td = env.step_mdp(td)
    assert env.reasons == ["max_plies"] * 4


def test_starts_are_seeded_and_leave_global_rngs_alone():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    game = fast_game(start="random", random_plies=8, phase_mix=[1.0, 1.0, 1.0])
    a = [s.board.fen() for s in game.initial_states(30, np.random.default_rng(42))]
    b = [s.board.fen() for s in game.initial_states(30, np.random.default_rng(42))]
    c = [s.board.fen() for s in game.initial_states(30, np.random.default_rng(43))]
    assert a == b and a != c
    assert len(set(a)) > 25
    pieces = [chess.popcount(chess.Board(f).occupied) for f in a]
    assert min(pieces) <= 6 and max(pieces) >= 28  # endgames and openings both drawn
    for fen in a:
        board = chess.Board(fen)
        assert board.is_valid() and not board.is_game_over(claim_draw=True)
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    assert (
        before[0] == after[0]
        and np.array_equal(before[1], after[1])
        and torch.equal(before[2], after[2])
    )


def test_tactics_roots_hold_a_mate_in_one_or_a_tempting_capture_and_skip_held_out_positions():
    from chessrl.envs.chess.starts import StartSampler, mating_moves, tempting

    sampler = StartSampler("random", phase_mix=[0, 0, 0, 0, 1], exclude=set())
    a = [b.fen() for b in sampler.sample(40, np.random.default_rng(7))]
    assert a == [b.fen() for b in sampler.sample(40, np.random.default_rng(7))]
    boards = [chess.Board(f) for f in a]
    mates = sum(bool(mating_moves(b)) for b in boards)
    assert 8 <= mates <= 32 and all(mating_moves(b) or tempting(b) for b in boards)
    assert all(b.is_valid() and not b.is_game_over(claim_draw=True) for b in boards)
    # a held-out (benchmark) position is never a root: exclude the first draw's positions
    held = {chess.Board(f).epd() for f in a}
    again = StartSampler("random", phase_mix=[0, 0, 0, 0, 1], exclude=held)
    assert not held & {b.epd() for b in again.sample(40, np.random.default_rng(7))}
    assert again.excluded > 0


def test_mating_moves_tries_only_checks_and_finds_every_mate():
    """The geometric filter in mating_moves (only moves that can give check are pushed) loses
    no mate: on 5,000 positions of seeded random games it equals pushing every legal move."""
    from chessrl.envs.chess.starts import mating_moves

    def every_mate(board):
        out = []
        for move in board.legal_moves:
            board.push(move)
            if board.is_checkmate():
                out.append(move)
            board.pop()
        return out

    rng, checked, with_mates = np.random.default_rng(11), 0, 0
    while checked < 5000:
        board = chess.Board()
        while checked < 5000 and not board.is_game_over():
            want = every_mate(board)
            assert mating_moves(board) == want == mating_moves(board, list(board.legal_moves))
            checked, with_mates = checked + 1, with_mates + bool(want)
            moves = list(board.legal_moves)
            board.push(moves[int(rng.integers(len(moves)))])
    assert with_mates >= 40  # the comparison saw mates


def test_start_file_positions_and_bad_line(tmp_path):
    good = tmp_path / "starts.epd"
    good.write_text(
        "# two positions\n"
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1\n\n"
        '8/8/8/4k3/8/8/4P3/4K3 w - - bm e4; id "pawn";\n'
    )
    game = fast_game(start="file", start_file=str(good))
    fens = {s.board.fen() for s in game.initial_states(20, np.random.default_rng(0))}
    assert fens == {
        "rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1",
        "8/8/8/4k3/8/8/4P3/4K3 w - - 0 1",
    }
    bad = tmp_path / "bad.fen"
    bad.write_text("# header\n8/8/8/4k3/8/8/4P3/4K3 w - - 0 1\nrnbqkbnr/pppppppp/8/8 w KQkq\n")
    with pytest.raises(
        UserError, match=rf"^{bad}:3: bad start position 'rnbqkbnr/pppppppp/8/8 w KQkq'"
    ):
        fast_game(start="file", start_file=str(bad))
    with pytest.raises(UserError, match="cannot read start file"):
        fast_game(start="file", start_file=str(tmp_path / "missing.fen"))


END_POSITIONS = [
    ("checkmate", "rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3", []),
    ("stalemate", "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", []),
    ("insufficient_material", "8/8/4k3/8/8/3NK3/8/8 w - - 0 1", []),
    ("fifty_moves", "8/8/4k3/8/8/3RK3/8/8 w - - 100 90", []),
    ("threefold_repetition", chess.STARTING_FEN, ["g1f3", "g8f6", "f3g1", "f6g8"] * 2),
]


@pytest.mark.parametrize("reason,fen,moves", END_POSITIONS, ids=[e[0] for e in END_POSITIONS])
def test_every_game_end_reason_is_detected_and_scored_without_the_engine(reason, fen, moves):
    game = ChessGame(depth=1, engines=1)  # reward 'stockfish', but terminal values never start it
    state = (
        game.state_from_options({"fen": fen, "moves": moves})
        if moves
        else ChessState(chess.Board(fen))
    )
    obs = game.observe([state])
    assert obs.terminated[0] and obs.reason == [reason]
    assert obs.action_mask[0].sum() == state.board.legal_moves.count()
    assert game.values([state])[0] == (-1.0 if reason == "checkmate" else 0.0)
    assert game._pool is None
    assert game.engine_actions([state])[0] == 0
    # One ply earlier the game was still on.
    if moves:
        earlier = game.state_from_options({"fen": fen, "moves": moves[:-1]})
        assert not game.observe([earlier]).terminated[0]


def test_repetition_count_matches_python_chess_along_games():
    from chessrl.envs.chess.game import repetitions

    rng = np.random.default_rng(3)
    checked = repeated = 0
    for _ in range(20):
        board = chess.Board()
        for _ in range(120):
            moves = list(board.legal_moves)
            if not moves:
                break
            # Mostly knight and king shuffles, so positions do recur.
            quiet = [
                m
                for m in moves
                if board.piece_type_at(m.from_square) in (chess.KNIGHT, chess.KING)
                and not board.is_capture(m)
            ]
            pool = quiet if quiet and rng.random() < 0.9 else moves
            board.push(pool[int(rng.integers(len(pool)))])
            expected = 2 if board.is_repetition(3) else 1 if board.is_repetition(2) else 0
            assert repetitions(board) == expected, board.fen()
            checked += 1
            repeated += expected > 0
    assert checked > 2000 and repeated > 50


def test_illegal_actions_are_refused():
    game = fast_game()
    state = game.initial_states(1, np.random.default_rng(0))[0]
    e2e5 = enc.UCI.index("e2e5")
    with pytest.raises(ValueError, match="illegal action"):
        game.play([state], np.array([e2e5]))  # not observed yet: checked by python-chess
    game.observe([state])
    with pytest.raises(ValueError, match="illegal action"):
        game.play([state], np.array([e2e5]))
    game.play([state], np.array([enc.UCI.index("e2e4")]))
    assert state.board.fen().startswith("rnbqkbnr/pppppppp/8/8/4P3")
    env = BoardGameEnv(fast_game(), batch_size=(1,))
    env.reset()
    with pytest.raises(ValueError, match="illegal action"):
        env.step(env.reset().set("action", torch.tensor([e2e5])))


def test_eval_opponents_play_legal_moves():
    game = ChessGame(depth=1, engines=1, opponent_depth=2, opponent_skill=5)
    try:
        states = game.initial_states(3, np.random.default_rng(0))
        opponents = game.eval_opponents()
        assert list(opponents) == [
            "random",
            "material_greedy",
            "skill_0",
        ]  # the default eval_ladder
        for name, opponent in opponents.items():
            for _ in range(4):
                live = [s for s in states if not game.observe([s]).terminated[0]]  # a rung may mate
                if not live:
                    break
                actions = opponent(live)
                mask = game.observe(live).action_mask
                assert mask[np.arange(len(live)), actions].all(), name
                game.play(live, actions)
        live = [s for s in states if not game.observe([s]).terminated[0]]
        teacher = game.engine_actions(live)
        assert game.observe(live).action_mask[np.arange(len(live)), teacher].all()
    finally:
        game.close()
