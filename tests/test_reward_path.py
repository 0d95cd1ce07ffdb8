"""The chess reward path does only the searches a step needs, and never changes a value by it.

Real Stockfish at small depths. Invariants: a position gets the same value with and without
deduplication and the cache, in any order and on any engine (fresh searches); scoring only
the final positions (returns = "terminal") gives the same returns and advantages as scoring
every ply, with fewer searches; the pool's pipelined driver survives a killed engine.
"""

from __future__ import annotations

import os

import chess
import numpy as np
import pytest
import torch
from conftest import random_positions

from chessrl.advantage import player_returns, rollout_advantages
from chessrl.env import BoardGameEnv
from chessrl.envs.chess.game import ChessGame
from chessrl.envs.chess.stockfish import StockfishPool
from chessrl.policy import Policy
from chessrl.rollout import collect

STOCKFISH = "/usr/games/stockfish"
pytestmark = pytest.mark.skipif(
    not os.access(STOCKFISH, os.X_OK), reason="needs Debian's stockfish"
)


@pytest.mark.parametrize("limit", [{"depth": 5}, {"nodes": 400}, {"static": True}])
def test_same_position_same_value_with_and_without_dedup_and_cache(limit):
    boards = random_positions(24, 0)
    batch = boards + boards[:8] + [b.copy() for b in boards[::3]]  # repeats within one batch
    plain = StockfishPool(
        STOCKFISH, engines=1, cache_size=0, **limit
    )  # no cache, one engine, in order
    fast = StockfishPool(
        STOCKFISH, engines=2, cache_size=1000, **limit
    )  # dedup + cache, two engines
    try:
        one_by_one = np.array([plain.values([b])[0] for b in batch])
        shuffled = np.random.default_rng(1).permutation(len(batch))
        batched = np.empty(len(batch), dtype=np.float32)
        batched[shuffled] = fast.values([batch[i] for i in shuffled])
        again = fast.values(batch[::-1])[::-1]  # all from the cache
        np.testing.assert_array_equal(one_by_one.astype(np.float32), batched)
        np.testing.assert_array_equal(batched, again)
        assert fast.evaluations == len(boards)  # each position searched once
        assert fast.hits == 2 * len(batch) - len(boards)
        assert plain.evaluations == len(batch)
    finally:
        plain.close()
        fast.close()


def test_static_eval_in_check_falls_back_to_a_search_and_mates_are_exact():
    pool = StockfishPool(STOCKFISH, engines=1, static=True, cache_size=0)
    try:
        check = chess.Board("4k3/8/8/8/8/8/4q3/4K3 w - - 0 1")  # white in check: no static eval
        mate_in_one = chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1")
        v = pool.values([check, mate_in_one])
        assert -1 <= v[0] <= 1 and np.isfinite(v).all()
    finally:
        pool.close()


def _rollout(score: str, seed: int = 4):
    game = ChessGame(depth=2, engines=2, start="random", random_plies=6, phase_mix=[0.6, 0.3, 0.1])
    env = BoardGameEnv(game, batch_size=(3, 4), seed=seed)
    torch.manual_seed(0)
    policy = Policy(game.obs_vocab, game.obs_len, game.n_actions, 32, 1, 2, 64).eval()
    try:
        td = collect(
            env,
            policy,
            plies=6,
            temperature=1.0,
            train_plies="both",
            generator=torch.Generator().manual_seed(2),
            score=score,
        )
        return td, game.stats()["evaluations"]
    finally:
        game.close()


def test_scoring_only_final_positions_gives_the_same_terminal_returns_with_fewer_searches():
    every, n_every = _rollout("every_ply")
    last, n_last = _rollout("last")
    assert torch.equal(every["action"], last["action"])  # the same games were played

    def args(td):
        return (
            td["next", "reward"].squeeze(-1),
            td["next", "value"].squeeze(-1),
            td["mover_is_root"],
            td["valid"],
            td["root_value"][..., 0],
        )

    ret_every = player_returns(*args(every), mode="terminal")
    ret_last = player_returns(*args(last), mode="terminal")
    torch.testing.assert_close(ret_every, ret_last, rtol=0, atol=0)
    a_every, _ = rollout_advantages(every, "terminal", "std", 1e-6)
    a_last, _ = rollout_advantages(last, "terminal", "std", 1e-6)
    torch.testing.assert_close(every["advantage"], last["advantage"], rtol=0, atol=0)
    assert n_last < n_every / 2  # roots + final positions only


def test_selfplay_starts_are_seeded_legal_varied_and_never_held_out_positions():
    from chessrl.envs.chess.starts import SELFPLAY_MIN_PLY

    game = ChessGame(depth=2, engines=2, start="selfplay", random_plies=6, selfplay_depth=1)
    try:
        first = [s.board for s in game.initial_states(40, np.random.default_rng(3))]
        again = [s.board for s in game.initial_states(40, np.random.default_rng(3))]
        other = [s.board for s in game.initial_states(40, np.random.default_rng(4))]
        assert [b.fen() for b in first] == [b.fen() for b in again]  # a function of the seed
        assert {b.epd() for b in first} != {b.epd() for b in other}
        assert len({b.epd() for b in first}) == 40
        assert all(b.is_valid() and not b.is_game_over(claim_draw=True) for b in first)
        plies = [b.ply() for b in first]
        assert (
            min(plies) >= SELFPLAY_MIN_PLY and max(plies) - min(plies) > 30
        )  # all phases, not openings only
        # a held-out position is never a start: exclude what the seed would draw, draw again
        game.starts._exclude = {b.epd() for b in first[:20]}
        redrawn = [s.board for s in game.initial_states(40, np.random.default_rng(3))]
        assert not {b.epd() for b in redrawn} & game.starts.exclude and game.starts.excluded >= 20
    finally:
        game.close()
