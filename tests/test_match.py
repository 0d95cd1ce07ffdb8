"""Game-agnostic match play (chessrl.match) on tic-tac-toe: colours, CIs, errors, no global RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from chessrl.envs.tictactoe import TicTacToe
from chessrl.match import MatchError, play_match
from chessrl.policy import Policy


def rng_states():
    return (
        torch.random.get_rng_state().clone(),
        np.random.get_state()[1].copy(),
        random.getstate(),
    )


def same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_perfect_vs_perfect_draws_every_game_and_colours_alternate():
    game = TicTacToe()
    sides = []
    res = play_match(
        game,
        game.engine_actions,
        game.engine_actions,
        games=6,
        seed=1,
        on_game=lambda i, s, score, reason: sides.append(i % 2),
    )
    assert (res.wins, res.draws, res.losses) == (0, 6, 0)
    assert res.score == 0.5 and res.interval()[0] < 0.5 < res.interval()[1]
    assert sides == [0, 1, 0, 1, 0, 1]
    s = res.summary()
    assert s["elo"] == 0.0 and s["games"] == 6 and sum(s["reasons"].values()) == 6


def test_random_never_beats_perfect_and_elo_interval_is_open_below():
    game = TicTacToe()
    res = play_match(game, game.eval_opponents()["random"], game.engine_actions, games=8, seed=2)
    assert res.wins == 0 and res.losses >= 1
    elo, lo, hi = res.elo()
    assert lo <= elo <= hi and elo < 0


def test_opponent_failure_is_an_error_naming_the_game_never_a_draw():
    game = TicTacToe()

    def broken(states):
        err = RuntimeError("engine died")
        err.index = len(states) - 1  # the last state of this batch failed
        raise err

    with pytest.raises(MatchError) as info:
        play_match(game, game.engine_actions, broken, games=4, seed=0)
    assert (
        info.value.games == [3] and "game 4" in str(info.value) and "engine died" in str(info.value)
    )


def test_policy_module_greedy_and_sampled_leave_global_rngs_alone():
    game = TicTacToe()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(game.obs_vocab, game.obs_len, game.n_actions, 16, 1, 2, 32)
    before = rng_states()
    a = play_match(
        game, policy, game.engine_actions, games=4, seed=5, greedy=False, temperature=1.0
    )
    b = play_match(game, policy, game.engine_actions, games=4, seed=5, greedy=True)
    assert same(before, rng_states())
    assert a.games == b.games == 4
    m = a.metrics("eval/perfect")
    assert set(m) >= {
        "eval/perfect/score",
        "eval/perfect/score_lo",
        "eval/perfect/score_hi",
        "eval/perfect/games",
    }
