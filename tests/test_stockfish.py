"""The Stockfish reward service, against the real engine (small depths keep it fast)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import chess
import numpy as np
import pytest
from conftest import random_positions

from chessrl.envs.chess import stockfish
from chessrl.envs.chess.game import ChessGame, ChessState
from chessrl.envs.chess.stockfish import (
    EngineFailure,
    StockfishPool,
    mate_value,
    process_alive,
    score_to_value,
)
from chessrl.errors import UserError

STOCKFISH = "/usr/games/stockfish"
pytestmark = pytest.mark.skipif(
    not os.access(STOCKFISH, os.X_OK), reason="needs Debian's stockfish"
)

POSITIONS = [
    chess.STARTING_FEN,
    "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3",
    "8/8/4k3/8/2Q5/4K3/8/8 b - - 0 1",  # black is lost
    "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1",  # white mates in one
    "rnbqkb1r/pppp1ppp/5n2/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R b KQkq - 3 3",
]


def boards() -> list[chess.Board]:
    return [chess.Board(f) for f in POSITIONS]


def wait_dead(pids: list[int], seconds: float = 5.0) -> list[int]:
    """The pids still alive after waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    alive = [p for p in pids if process_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if process_alive(p)]
    return alive


def test_missing_binary_is_a_user_error():
    with pytest.raises(
        UserError,
        match=r"stockfish not found at /nope/stockfish; install Debian's `stockfish` "
        r"package or set `\[env\] stockfish_path`",
    ):
        ChessGame(stockfish_path="/nope/stockfish")


def test_value_mapping_prefers_shorter_mates_and_keeps_mates_above_every_cp_score():
    assert score_to_value(chess.engine.Cp(0), 271.6) == 0.0
    v = score_to_value(chess.engine.Cp(300), 271.6)
    assert 0.4 < v < 0.5 and score_to_value(chess.engine.Cp(-300), 271.6) == pytest.approx(-v)
    mates = [score_to_value(chess.engine.Mate(n), 271.6) for n in range(1, 30)]
    assert all(a > b for a, b in zip(mates, mates[1:]))  # a mate in 1 beats a mate in 2 ...
    best_cp = score_to_value(chess.engine.Cp(100_000), 271.6)
    assert min(mates) > best_cp and mates[0] < 1.0  # ... and every mate beats any cp score
    assert [score_to_value(chess.engine.Mate(-n), 271.6) for n in range(1, 30)] == [
        -m for m in mates
    ]
    assert (
        score_to_value(chess.engine.Mate(0), 271.6) == -1.0
    )  # mated on the board: the game result


def test_values_are_deterministic_across_engines_and_calls_and_close_ends_processes():
    pool = StockfishPool(STOCKFISH, engines=2, depth=4, cache_size=0)
    try:
        first = pool.values(boards())
        second = pool.values(boards()[::-1])[::-1]  # other order: other engines, warm hashes
        np.testing.assert_array_equal(first, second)
        assert ((first >= -1) & (first <= 1)).all()
        assert first[2] < -0.5 and first[3] == np.float32(mate_value(1)) and abs(first[0]) < 0.5
        assert pool.stats()["hits"] == 0 and pool.evaluations == 10
        pids = pool.pids()
        assert len(pids) == 2 and all(process_alive(p) for p in pids)  # the batch used both engines
    finally:
        pool.close()
    assert wait_dead(pids, 0.0) == []  # gone when close() returns
    pool.close()  # idempotent


def test_cache_keys_are_the_epd_whatever_the_en_passant_square():
    """The pool derives its cache key from the FEN it sends; it must be ``board.epd()``, which
    names an en-passant square only when a capture there is legal."""
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(40):
        board = chess.Board()
        for _ in range(int(rng.integers(1, 40))):
            moves = list(board.legal_moves)
            if not moves:
                break
            board.push(moves[int(rng.integers(len(moves)))])
            fen, key = stockfish._fen_and_key(board)
            assert key == board.epd() and fen == board.fen(en_passant="fen")
            seen += fen.split()[3] != "-"
    board = chess.Board()
    for san in ("e4", "a6", "e5", "d5"):  # exd6 e.p. is legal: the EPD names d6
        board.push_san(san)
    assert stockfish._fen_and_key(board)[1].split()[3] == "d6"
    assert seen > 0  # some double pushes without a legal capture were checked too


def test_values_do_not_depend_on_how_the_driver_reads_the_engines(monkeypatch):
    """Reading every info line as it comes, or napping between reads so that one read holds
    several searches' output: the same value for every position."""
    many = random_positions(60, 1)
    values = []
    for nap in (0.0, 5.0):  # 5.0: a nap of 2 ms (the cap) between reads
        monkeypatch.setattr(stockfish, "_NAP", nap)
        pool = StockfishPool(STOCKFISH, engines=2, depth=3, cache_size=0)
        try:
            pool._search_seconds = 1.0 if nap else 0.0  # napping from the first read on
            values.append(pool.values(many))
            assert pool.evaluations == len(many)
        finally:
            pool.close()
    np.testing.assert_array_equal(values[0], values[1])


def test_cache_counts_hits_and_dedupes_a_batch():
    pool = StockfishPool(STOCKFISH, engines=1, depth=2, cache_size=3)
    try:
        b = boards()
        pool.values([b[0], b[0], b[1]])
        assert (pool.hits, pool.misses, pool.evaluations) == (1, 2, 2)
        moved = chess.Board()
        for san in ("Nf3", "Nf6", "Ng1", "Ng8"):  # the start position again, other counters
            moved.push_san(san)
        pool.values([moved])
        assert (pool.hits, pool.evaluations) == (2, 2)
        pool.values(b[2:5])  # 3 new positions evict the two oldest (LRU, size 3)
        assert pool.stats()["cache_entries"] == 3
        pool.values([b[0]])
        assert pool.evaluations == 6 and pool.stats()["hit_rate"] == pytest.approx(2 / 8)
    finally:
        pool.close()


def test_killed_engine_is_restarted_and_failures_are_never_cached():
    pool = StockfishPool(STOCKFISH, engines=1, depth=3, cache_size=100, retries=1)
    try:
        reference = pool.values(boards()[:1])[0]
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        wait_dead([pid])
        board = chess.Board(POSITIONS[1])
        value = pool.values([board])[0]  # the dead engine fails, is restarted, the retry works
        assert pool.restarts == 1 and pool.pids() != [pid]
        # Now every (re)start fails: the error surfaces and nothing is cached.
        pool.path = "/bin/false"
        os.kill(pool.pids()[0], signal.SIGKILL)
        with pytest.raises(EngineFailure, match="after 2 attempts"):
            pool.values([chess.Board(POSITIONS[2])])
        assert pool.stats()["cache_entries"] == 2
        pool.path = STOCKFISH
        pool.cache_size = 0
        pool._cache.clear()
        again = pool.values([chess.Board(POSITIONS[0]), board])
        assert again[0] == reference and again[1] == value
    finally:
        pool.close()


def test_game_values_engine_moves_stats_and_no_leftover_processes():
    game = ChessGame(depth=2, engines=2, engine_move_depth=2)
    states = [ChessState(b) for b in boards()]
    v1 = game.values(states)
    v2 = game.values(states)
    np.testing.assert_array_equal(v1, v2)
    stats = game.stats()
    assert stats["hits"] == 5 and stats["misses"] == 5 and stats["hit_rate"] == 0.5
    assert game.engine_seconds > 0
    actions = game.engine_actions(states)
    mask = game.observe(states).action_mask
    assert mask[np.arange(5), actions].all()
    assert game.action_to_str(int(actions[3])) == "a1a8"  # the mate in one
    pids = game.pool.pids()
    game.close()
    assert wait_dead(pids, 0.0) == []
    game.close()


CRASHING_RUN = """
import numpy as np
from chessrl.envs.chess.game import ChessGame
game = ChessGame(depth=1, engines=2)
game.values(game.initial_states(1, np.random.default_rng(0)))
game.pool.start_all()
print(" ".join(map(str, game.pool.pids())), flush=True)
raise RuntimeError("the training loop crashed")
"""


def test_a_crashing_process_leaves_no_stockfish_behind():
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "the training loop crashed" in proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert wait_dead(pids) == []
