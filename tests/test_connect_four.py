"""Connect Four: bitboard rules, the alpha-beta solver, the Gym and TorchRL views."""

from __future__ import annotations

import time
import warnings

import gymnasium
import numpy as np
import pytest
import torch

import chessrl  # noqa: F401  (registers the chessrl/... Gymnasium ids)
from chessrl.env import BoardGameEnv
from chessrl.envs import connect_four as c4
from chessrl.envs.connect_four import C4State, ConnectFour, ConnectFourOptions, Solver, parse_moves


@pytest.fixture(scope="module")
def game() -> ConnectFour:
    return ConnectFour(ConnectFourOptions(solver_depth=4, opponent_depth=4), seed=0)


def reference(cur: int, mask: int, depth: int) -> int:
    """Plain depth-limited negamax with the solver's node rules, no pruning and no table."""
    possible = (mask + c4.BOTTOM) & c4.BOARD
    if not possible:
        return 0
    mine = c4.winning_cells(cur, mask)
    if mine & possible:
        return c4.WIN - 1
    theirs = c4.winning_cells(cur ^ mask, mask)
    forced = theirs & possible
    if forced & (forced - 1):
        return -(c4.WIN - 2)
    if depth == 0:
        return c4.heuristic(cur, mask, mine, theirs)
    return max(
        c4._adj(-reference(cur ^ mask, mask | (mask + (1 << (c * c4.H1))), depth - 1))
        for c in range(c4.WIDTH)
        if possible & c4.COLUMN[c]
    )


# --- rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moves, direction",
    [
        ("0101010", "vertical"),
        ("0011223", "horizontal"),
        ("01122323353", "diagonal /"),
        ("65544343313", "diagonal \\"),
    ],
)
def test_win_detection_in_all_directions(game, moves, direction):
    before = parse_moves(moves[:-1])
    assert not game.observe([before]).terminated[0]
    s = game.play([before], np.array([int(moves[-1])]))[0]
    obs = game.observe([s])
    assert obs.terminated[0] and obs.reason[0] == "win", direction
    assert not obs.action_mask[0].any()
    assert game.values([s])[0] == -1.0  # the side to move has lost
    assert c4.has_won(s.cur ^ s.mask) and not c4.has_won(s.cur)


def test_no_false_win_across_columns(game):
    # Stones at the top of column 0 and the bottom of column 1 are adjacent in bit order
    # only through the sentinel row; they must not count as a line.
    s = parse_moves("0" * 6 + "1")
    assert not game.observe([s]).terminated[0]


def test_draw_on_full_board(game):
    # A random game (seed 0, game 808) that filled the board without a line.
    s = parse_moves("555054466351352123041430222100021613443666")
    obs = game.observe([s])
    assert s.mask == c4.BOARD and obs.terminated[0] and obs.reason[0] == "draw"
    assert game.values([s])[0] == 0.0


def test_observation_tokens(game):
    s = parse_moves("3")
    obs = game.observe([s])
    assert obs.tokens.shape == (1, 42) and obs.to_play[0] == 1
    # Bottom row, centre column is the last row of tokens: the opponent's stone for O.
    assert obs.tokens[0, 5 * 7 + 3] == 2 and obs.tokens[0].sum() == 2
    assert game.state_to_str(s).endswith("/...X... (O to move)")


def test_illegal_moves_raise(game):
    with pytest.raises(ValueError, match="illegal"):
        game.play([parse_moves("000000")], np.array([0]))
    with pytest.raises(ValueError):
        parse_moves("0101010" + "1")  # the game is already over


# --- solver --------------------------------------------------------------------------


def test_finds_win_in_one(game):
    s = parse_moves("001122")  # X to move: column 3 makes four on the bottom row
    assert game.values([s])[0] == 1.0
    assert game.engine_actions([s] * 5).tolist() == [3] * 5


def test_blocks_immediate_threat(game):
    s = parse_moves("06162")  # O to move; X threatens column 3 on the bottom row
    assert game.engine_actions([s] * 5).tolist() == [3] * 5
    assert game.values([s])[0] < 1.0


def test_sees_forced_loss_and_prefers_fast_wins():
    g = ConnectFour(ConnectFourOptions(solver_depth=2, opponent_depth=3), seed=0)
    s = parse_moves("15253")  # X: 1, 2, 3 on the bottom row with both ends open; O to move
    assert g.values([s])[0] == -1.0  # O cannot block both ends
    # The engine wins at once when it can, even though slower wins also exist.
    s2 = g.play([s], np.array([0]))[0]
    assert g.engine_actions([s2] * 3).tolist() == [4] * 3


def test_solver_matches_plain_negamax_with_and_without_table():
    rng = np.random.default_rng(1)
    opts = ConnectFourOptions(start="random")
    g = ConnectFour(opts, seed=0)
    with_tt, without_tt = Solver(), Solver(use_tt=False)
    proven = 0
    for _ in range(60):
        opts.random_plies = int(rng.integers(0, 26))
        s = g.initial_states(1, rng)[0]
        depth = int(rng.integers(1, 4))
        expected = reference(s.cur, s.mask, depth)
        assert with_tt.score(s, depth) == without_tt.score(s, depth) == expected, g.state_to_str(s)
        proven += abs(expected) > c4.PROVEN
    assert proven >= 3  # the sample covers found wins and losses, not only heuristics
    # Once filled, the table must not change answers (entries are per depth).
    s = parse_moves("3324")
    assert with_tt.score(s, 4) == without_tt.score(s, 4)


def test_values_are_in_range_and_cached(game):
    states = game.initial_states(1, np.random.default_rng(0)) + [
        parse_moves("33221"),
        parse_moves("0"),
    ]
    v1 = game.values(states)
    n = game.solver.nodes
    v2 = game.values(states)
    assert (v1 == v2).all() and game.solver.nodes == n  # the second call is a cache hit
    assert np.all(np.abs(v1) <= 1) and v1.dtype == np.float32


def test_solver_beats_random():
    g = ConnectFour(ConnectFourOptions(opponent_depth=2), seed=0)
    opp = g.eval_opponents()
    wins = 0
    for game_no in range(6):
        solver_side = game_no % 2
        s = C4State(0, 0)
        while not g.observe([s]).terminated[0]:
            mover = opp["solver"] if g.observe([s]).to_play[0] == solver_side else opp["random"]
            s = g.play([s], mover([s]))[0]
        obs = g.observe([s])
        wins += obs.reason[0] == "win" and obs.to_play[0] != solver_side
    assert wins == 6


def test_rollout_speed_8x16x20_depth4(capsys):
    """A rollout of 8 roots x 16 boards x 20 plies scored at depth 4 takes well under seconds."""
    g = ConnectFour(ConnectFourOptions(solver_depth=4), seed=0)
    env = BoardGameEnv(g, batch_size=(8, 16), seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    td = env.reset()
    for _ in range(20):
        mask = td["action_mask"].reshape(-1, 7).numpy()
        acts = np.array([rng.choice(np.flatnonzero(m)) for m in mask])
        td["action"] = torch.as_tensor(acts).reshape(8, 16)
        td = env.step(td)["next"]
    dt = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\n[connect_four] 8x16x20 rollout, solver_depth=4: {dt:.2f} s, {g.solver.nodes} nodes"
        )
    assert dt < 6.0  # ~1 s on one idle core; generous for a shared 2-core machine


# --- views ---------------------------------------------------------------------------


def test_gym_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make("chessrl/ConnectFour-v0", solver_depth=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render fps.*")
        check_env(env.unwrapped)
    env.close()


def test_gym_reset_from_moves():
    env = c4.make_gym_env(solver_depth=2)
    obs, info = env.reset(options={"moves": "001122"})
    assert info["to_play"] == 0 and obs["action_mask"].all()
    obs, reward, terminated, truncated, info = env.step(3)
    assert terminated and info["reason"] == "win" and reward == 0.0  # the win was already seen


def test_board_env_group_members_start_identical():
    g = ConnectFour(ConnectFourOptions(start="random", random_plies=6, solver_depth=1), seed=0)
    env = BoardGameEnv(g, batch_size=(3, 4), seed=2)
    td = env.reset()
    obs = td["observation"]
    assert (obs == obs[:, :1]).all() and not (obs == obs[:1]).all()
    assert ((obs != 0).sum(-1) == 6).all()
