"""Tic-tac-toe: exact minimax values, a perfect engine, the Gym and TorchRL views."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest

import chessrl  # noqa: F401  (registers the chessrl/... Gymnasium ids)
from chessrl.env import BoardGameEnv
from chessrl.envs.tictactoe import TicTacToe, TicTacToeOptions, make_gym_env, parse_board, tables
from chessrl.errors import UserError


@pytest.fixture(scope="module")
def game() -> TicTacToe:
    return TicTacToe(TicTacToeOptions(), seed=0)


def test_solves_all_reachable_positions():
    t = tables()
    assert int(t.reachable.sum()) == 5478
    assert (
        int((t.reason == 1).sum()) == 942 and int((t.reason == 2).sum()) == 16
    )  # the 958 known end positions


@pytest.mark.parametrize(
    "board, value",
    [
        ("...|...|...", 0.0),  # perfect play draws
        ("XX.|OO.|...", 1.0),  # X to move completes the top row
        ("XX.|OO.|X..", 1.0),  # O to move completes the middle row
        ("X..|.O.|..X", 0.0),  # O must take an edge, then it is a draw
        ("X..|...|..O", 1.0),  # X wins by force (corner, opposite corner reply)
        ("XXX|OO.|...", -1.0),  # X just won: O to move has lost
        ("XOX|XOO|OXX", 0.0),  # full board, no line: draw
    ],
)
def test_known_values(game, board, value):
    assert game.values([parse_board(board)])[0] == value


def test_terminal_results(game):
    obs = game.observe([parse_board("XXX|OO.|..."), parse_board("XOX|XOO|OXX"), 0])
    assert obs.terminated.tolist() == [True, True, False]
    assert obs.reason == ["win", "draw", ""]
    assert not obs.action_mask[:2].any() and obs.action_mask[2].all()


def test_tokens_are_from_the_side_to_move(game):
    # After X plays the centre, O is to move: the centre is the opponent's (2) for O.
    s = game.play([0], np.array([4]))[0]
    obs = game.observe([s])
    assert (
        obs.to_play[0] == 1 and obs.tokens[0, 4] == 2 and (np.delete(obs.tokens[0], 4) == 0).all()
    )
    s = game.play([s], np.array([0]))[0]
    obs = game.observe([s])
    assert obs.to_play[0] == 0 and obs.tokens[0, 4] == 1 and obs.tokens[0, 0] == 2


def test_engine_takes_immediate_win_and_blocks(game):
    assert game.engine_actions([parse_board("XX.|OO.|...")] * 8).tolist() == [2] * 8
    assert game.engine_actions([parse_board("XX.|O..|...")] * 8).tolist() == [2] * 8  # O blocks


def test_illegal_move_raises(game):
    with pytest.raises(ValueError, match="illegal"):
        game.play([parse_board("X..|...|...")], np.array([0]))


def test_perfect_never_loses_to_random():
    g = TicTacToe(TicTacToeOptions(), seed=3)
    opp = g.eval_opponents()
    results = []
    for game_no in range(200):
        perfect_side = game_no % 2
        state = 0
        while not g.observe([state]).terminated[0]:
            mover = (
                opp["perfect"] if g.observe([state]).to_play[0] == perfect_side else opp["random"]
            )
            state = g.play([state], mover([state]))[0]
        # The side to move at the end lost (or drew): the perfect side must not be it after a win.
        if g.observe([state]).reason[0] == "win":
            results.append(g.observe([state]).to_play[0] != perfect_side)
    assert results and all(results)
    assert sum(results) > 150  # and it wins most games against random


def test_engine_tie_breaks_are_seeded_not_global():
    np.random.seed(123)
    a = TicTacToe(TicTacToeOptions(), seed=7).engine_actions([0] * 30)
    np.random.seed(456)
    b = TicTacToe(TicTacToeOptions(), seed=7).engine_actions([0] * 30)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) > 1  # random among optimal moves


def test_random_starts(game):
    g = TicTacToe(TicTacToeOptions(start="random", random_plies=5), seed=0)
    states = g.initial_states(50, np.random.default_rng(0))
    obs = g.observe(states)
    assert not obs.terminated.any() and (obs.action_mask.sum(1) == 4).all()
    assert len(set(states)) > 10


def test_gym_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make("chessrl/TicTacToe-v0")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render fps.*")
        check_env(env.unwrapped)
    env.close()


def test_gym_episode_and_reset_options():
    env = make_gym_env()
    obs, info = env.reset(seed=0, options={"board": "XX.|OO.|..."})
    assert info["to_play"] == 0 and obs["action_mask"].sum() == 5
    obs, reward, terminated, truncated, info = env.step(2)
    assert (
        terminated and not truncated and info["reason"] == "win" and reward == 0.0
    )  # value was already +1
    env.reset(options={"moves": [4, 0]})
    assert env.render() == "O..|.X.|... (X to move)"
    with pytest.raises(ValueError):
        env.reset(options={"board": "XXX|XXX|XXX"})
    with pytest.raises(UserError, match="random_plies"):
        make_gym_env(random_plies=20)


def test_board_env_group_members_start_identical():
    env = BoardGameEnv(
        TicTacToe(TicTacToeOptions(start="random", random_plies=3)), batch_size=(4, 3), seed=1
    )
    td = env.reset()
    obs = td["observation"]
    assert (obs == obs[:, :1]).all() and not (obs == obs[:1]).all()
