"""The held-out chess benchmark: real Stockfish labels checked with python-chess, determinism,
the cache, scoring, the ladder opponents and the Elo estimate. A tiny spec keeps it to seconds."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import chess
import numpy as np
import pytest
import torch

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.benchmark import (
    Benchmark,
    BenchmarkSpec,
    build,
    cache_path,
    choose_fn,
    elo_estimate,
    material_greedy,
    mating_moves,
    random_mover,
    rung_opponent,
    stockfish_nodes,
    stockfish_skill,
)
from chessrl.envs.chess.game import ChessState
from chessrl.envs.chess.stockfish import StockfishPool
from chessrl.policy import Policy
from chessrl.stats import wilson

STOCKFISH = "/usr/games/stockfish"
needs_stockfish = pytest.mark.skipif(not shutil.which(STOCKFISH), reason="needs Stockfish")

TINY = BenchmarkSpec(
    seed=0,
    agreement=40,
    label_depth=6,
    mate_in_one=10,
    material=10,
    ladder_games=4,
    ladder=("random", "eps0.5:material_greedy", "nodes:1"),
    allow_shallow=True,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bench")
    lines: list[str] = []
    bench = build(TINY, cache, log=lines.append)
    return bench, cache, lines


def ply_of(board: chess.Board) -> int:
    return 2 * (board.fullmove_number - 1) + (board.turn == chess.BLACK)


# --- the stored labels ---------------------------------------------------------------------


@needs_stockfish
def test_sets_have_the_asked_sizes_and_distinct_positions(built):
    bench, _, lines = built
    assert len(bench.agreement) == TINY.agreement
    assert len(bench.mate_in_one) == TINY.mate_in_one
    assert len(bench.material) == TINY.material
    assert len({chess.Board(r["fen"]).epd() for r in bench.agreement}) == TINY.agreement
    assert {r["source"] for r in bench.agreement} == {"selfplay", "endgame"}
    assert bench.keys() == {
        chess.Board(r["fen"]).epd()
        for rows in (bench.agreement, bench.mate_in_one, bench.material)
        for r in rows
    }
    assert any(
        "agreement labels" in line and f"{TINY.agreement}/{TINY.agreement}" in line
        for line in lines
    )
    # the build says what it does before the first batch, so a terminal is never blank for minutes
    assert lines[0].startswith("benchmark: building ") and "labels at depth 6" in lines[0], lines[0]
    assert any(line.startswith("benchmark: self-play ") for line in lines)
    assert any(line.startswith("benchmark: ladder ") for line in lines)


@needs_stockfish
def test_agreement_labels_are_legal_distinct_and_ordered(built):
    bench, _, _ = built
    for row in bench.agreement:
        board = chess.Board(row["fen"])
        assert not board.is_game_over(claim_draw=True), row
        moves = [chess.Move.from_uci(u) for u in row["top3"]]
        assert len(set(moves)) == 3 and all(board.is_legal(m) for m in moves), row
        assert row["best"] == row["top3"][0]
        assert row["cp"] == sorted(row["cp"], reverse=True), row
        if row["source"] == "selfplay":
            assert row["ply"] >= 6 and ply_of(board) == row["ply"]


@needs_stockfish
def test_every_stored_mate_mates_and_none_is_missing(built):
    bench, _, _ = built
    for row in bench.mate_in_one:
        board = chess.Board(row["fen"])
        assert ply_of(board) >= 6
        for uci in row["mates"]:
            b = board.copy()
            b.push_uci(uci)
            assert b.is_checkmate(), row
        every = set()
        for move in board.legal_moves:
            board.push(move)
            if board.is_checkmate():
                every.add(move.uci())
            board.pop()
        assert every == set(row["mates"]) and every, row


@needs_stockfish
def test_material_positions_win_material_by_the_gap(built):
    bench, _, _ = built
    for row in bench.material:
        board = chess.Board(row["fen"])
        best = chess.Move.from_uci(row["best"])
        assert board.is_legal(best)
        assert board.is_capture(best) or best.promotion, row
        assert row["gap_cp"] >= TINY.material_gap_cp and row["gain"] >= 1


@needs_stockfish
def test_ladder_is_anchored_at_random_and_rated_from_real_games(built):
    bench, _, _ = built
    rungs = bench.ladder["rungs"]
    assert [r["name"] for r in rungs] == list(TINY.ladder)
    assert rungs[0]["elo"] == 0.0 and bench.ratings["random"] == 0.0
    for rung in rungs[1:]:
        assert rung["games"] == TINY.ladder_games == rung["wins"] + rung["draws"] + rung["losses"]
        assert math.isfinite(rung["lo"]) and rung["lo"] <= rung["elo"] <= rung["hi"]


# --- determinism and the cache -------------------------------------------------------------


@pytest.mark.slow
@needs_stockfish
def test_same_seed_same_file_other_seed_other_positions(built, tmp_path):
    bench, _, _ = built
    again = build(TINY, tmp_path / "a", log=lambda s: None)
    assert again.path.read_text() == bench.path.read_text()
    other = build(dataclasses.replace(TINY, seed=1), tmp_path / "b", log=lambda s: None)
    assert other.path.name != bench.path.name
    assert {r["fen"] for r in other.agreement}.isdisjoint({r["fen"] for r in bench.agreement})


@needs_stockfish
def test_second_build_loads_without_an_engine(built):
    bench, cache, _ = built
    lines: list[str] = []
    missing = dataclasses.replace(TINY, stockfish_path="/nonexistent/stockfish", engines=7)
    loaded = build(missing, cache, log=lines.append)
    assert loaded.path == bench.path and loaded.to_json() == bench.to_json()
    assert any("not found" in line for line in lines)
    lines.clear()
    assert build(TINY, cache, log=lines.append).to_json() == bench.to_json()
    assert lines == [f"benchmark: loaded {bench.path}"]


def test_cache_name_changes_with_the_spec_and_the_engine(tmp_path):
    base = cache_path(TINY, tmp_path, "Stockfish 15.1")
    assert base.name.endswith("-stockfish-15.1.json")
    assert (
        cache_path(dataclasses.replace(TINY, material_gap_cp=300), tmp_path, "Stockfish 15.1")
        != base
    )
    assert cache_path(TINY, tmp_path, "Stockfish 16") != base
    # what does not change the content does not change the name
    assert (
        cache_path(
            dataclasses.replace(TINY, engines=5, stockfish_path="sf"), tmp_path, "Stockfish 15.1"
        )
        == base
    )


def test_spec_refuses_shallow_labels_and_unknown_rungs():
    with pytest.raises(ValueError, match="label_depth"):
        BenchmarkSpec(label_depth=8)
    with pytest.raises(ValueError, match="rung"):
        BenchmarkSpec(ladder=("random", "stockfish"))
    with pytest.raises(ValueError, match="first rung"):
        BenchmarkSpec(ladder=("material_greedy", "random"))


# --- scoring -------------------------------------------------------------------------------


def _oracle(bench: Benchmark):
    answer = {r["fen"]: r["best"] for r in bench.agreement + bench.material}
    answer.update({r["fen"]: r["mates"][0] for r in bench.mate_in_one})
    return lambda boards: [chess.Move.from_uci(answer[b.fen()]) for b in boards]


def _random_chooser(seed: int):
    rng = np.random.default_rng(seed)

    def choose(boards):
        out = []
        for b in boards:
            moves = list(b.legal_moves)
            out.append(moves[int(rng.integers(len(moves)))])
        return out

    return choose


@needs_stockfish
def test_score_of_the_stored_answers_is_perfect(built):
    bench, _, _ = built
    s = bench.score(_oracle(bench))
    for key in ("agreement/top1", "agreement/top3", "mate1/success", "material/success"):
        assert s[key] == 1.0
    assert (s["agreement/top1_lo"], s["agreement/top1_hi"]) == wilson(
        TINY.agreement, TINY.agreement
    )
    assert (s["agreement/n"], s["mate1/n"], s["material/n"]) == (
        TINY.agreement,
        TINY.mate_in_one,
        TINY.material,
    )


@needs_stockfish
def test_quiet_agreement_counts_only_positions_whose_best_move_is_quiet(built):
    bench, _, _ = built
    rows = {r["fen"]: r for r in bench.agreement}

    def tactical(fen, uci):
        board, move = chess.Board(fen), chess.Move.from_uci(uci)
        return board.is_capture(move) or move.promotion is not None

    quiet_n = sum(not tactical(r["fen"], r["best"]) for r in bench.agreement)
    assert 0 < quiet_n < TINY.agreement  # the set holds both kinds

    def greedy_taker(boards):
        """Stockfish's move where it captures or promotes, another legal move where it is quiet."""
        out = []
        for b in boards:
            row = rows.get(b.fen())
            best = chess.Move.from_uci(row["best"]) if row else next(iter(b.legal_moves))
            if row and not tactical(row["fen"], row["best"]):
                best = next(m for m in b.legal_moves if m != best)
            out.append(best)
        return out

    s = bench.score(greedy_taker)
    assert s["quiet/n"] == quiet_n and s["quiet/top1"] == 0.0
    assert s["agreement/top1"] == (TINY.agreement - quiet_n) / TINY.agreement
    assert bench.score(_oracle(bench))["quiet/top1"] == 1.0


@needs_stockfish
def test_score_of_random_moves_is_lower_and_counted_exactly(built):
    bench, _, _ = built
    s = bench.score(_random_chooser(0))
    assert s["agreement/top1"] < 1.0 and s["agreement/top1"] <= s["agreement/top3"]
    moves = _random_chooser(0)([chess.Board(r["fen"]) for r in bench.agreement])
    hits = sum(m.uci() == r["best"] for m, r in zip(moves, bench.agreement))
    assert s["agreement/top1"] == hits / TINY.agreement
    assert (s["agreement/top1_lo"], s["agreement/top1_hi"]) == wilson(hits, TINY.agreement)
    assert s["agreement/top1_lo"] <= s["agreement/top1"] <= s["agreement/top1_hi"]


@needs_stockfish
def test_compare_pairs_two_players_position_by_position(built):
    bench, _, _ = built
    oracle, rand = bench.answers(_oracle(bench)), bench.answers(_random_chooser(0))
    assert bench.score_answers(oracle) == bench.score(_oracle(bench))
    c = bench.compare(rand, oracle)  # random first, the oracle second
    top1 = c["agreement/top1"]
    hits = sum(m == r["best"] for m, r in zip(rand["agreement"], bench.agreement))
    assert (top1["both"], top1["first_only"]) == (hits, 0)  # the oracle is right everywhere
    assert top1["second_only"] == TINY.agreement - hits and top1["neither"] == 0
    assert top1["changed"] == TINY.agreement - hits  # it moves wherever random missed
    assert top1["difference"] == pytest.approx(1.0 - hits / TINY.agreement)
    assert top1["lo"] <= top1["difference"] <= top1["hi"]
    assert set(c) == {
        "agreement/top1",
        "agreement/top3",
        "quiet/top1",
        "mate1/success",
        "material/success",
    }
    same = bench.compare(oracle, oracle)
    for row in same.values():
        assert row["difference"] == 0.0 and row["first_only"] == row["second_only"] == 0
    assert same["agreement/top1"]["changed"] == 0


@needs_stockfish
def test_score_refuses_illegal_answers(built):
    bench, _, _ = built
    with pytest.raises(ValueError, match="not a legal move"):
        bench.score(lambda boards: [chess.Move(chess.A1, chess.H8) for _ in boards])


@needs_stockfish
def test_choose_fn_plays_the_policy_argmax_legal_move(built):
    bench, _, _ = built
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(enc.OBS_VOCAB, enc.OBS_LEN, enc.N_ACTIONS, 16, 1, 2, 32)
    policy.train()
    choose = choose_fn(policy)
    boards = [chess.Board(r["fen"]) for r in bench.agreement[:8]]
    moves = choose(boards)
    assert policy.training  # mode restored
    assert all(b.is_legal(m) for b, m in zip(boards, moves))
    assert choose(boards) == moves  # greedy: no sampling
    s = bench.score(choose)
    assert 0.0 <= s["agreement/top1"] <= s["agreement/top3"] <= 1.0


# --- ladder opponents ----------------------------------------------------------------------


def _action(opponent, fen: str) -> chess.Move:
    board = chess.Board(fen)
    return enc.action_to_move(int(opponent([ChessState(board)])[0]), board.turn)


def test_material_greedy_takes_a_free_queen_and_prefers_mate():
    free_queen = "4k3/8/8/3q4/4P3/8/8/4K3 w - - 0 1"
    assert _action(material_greedy(0), free_queen) == chess.Move.from_uci("e4d5")
    # Bxc3 wins the queen, Re8 mates: mate first
    mate_or_queen = "6k1/5ppp/8/8/8/2q5/8/B3R1K1 w - - 0 1"
    assert [m.uci() for m in mating_moves(chess.Board(mate_or_queen))] == ["e1e8"]
    assert _action(material_greedy(0), mate_or_queen) == chess.Move.from_uci("e1e8")
    black = "4k3/8/8/3p4/4Q3/8/8/4K3 b - - 0 1"  # black's pawn takes the queen (mirrored actions)
    assert _action(material_greedy(3), black) == chess.Move.from_uci("d5e4")


def test_random_mover_is_seeded_and_zero_on_finished_boards():
    states = [ChessState(chess.Board()) for _ in range(6)]
    assert (random_mover(4)(states) == random_mover(4)(states)).all()
    mated = ChessState(chess.Board("4R1k1/5ppp/8/8/8/8/8/6K1 b - - 0 1"))
    assert mated.board.is_checkmate()
    assert material_greedy(0)([mated])[0] == 0 and random_mover(0)([mated])[0] == 0


@needs_stockfish
def test_stockfish_rungs_play_legal_moves():
    pool = StockfishPool(STOCKFISH, 1, 16, depth=4)
    try:
        boards = [
            chess.Board(),
            chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"),
            chess.Board("4R1k1/5ppp/8/8/8/8/8/6K1 b - - 0 1"),
        ]  # the last is mated
        for opponent in (
            stockfish_nodes(pool, 1),
            stockfish_skill(pool, 0),
            rung_opponent("eps0.5:skill:0", pool, 1),
        ):
            actions = opponent([ChessState(b.copy()) for b in boards])
            assert actions.dtype == np.int64 and actions[2] == 0
            for b, a in zip(boards[:2], actions[:2]):
                assert b.is_legal(enc.action_to_move(int(a), b.turn))
        mate = stockfish_nodes(pool, 1)([ChessState(boards[1])])[0]
        assert enc.action_to_move(int(mate), chess.WHITE).uci() == "a1a8"
    finally:
        pool.close()


# --- the Elo estimate ----------------------------------------------------------------------


def test_elo_estimate_is_monotone_and_finite_at_the_extremes():
    estimates = [elo_estimate({"a": (k / 20, 20)}, {"a": 100.0}) for k in range(21)]
    elos = [e for e, _, _ in estimates]
    assert all(x < y for x, y in zip(elos, elos[1:]))
    for e, lo, hi in estimates:
        assert all(math.isfinite(x) for x in (e, lo, hi)) and lo < e < hi
    assert abs(elos[10] - 100.0) < 1e-3  # an even score against one opponent is its rating
    # the near end at 100% is a real lower bound: above the opponent with 20 wins out of 20
    assert estimates[-1][1] > 100.0 and estimates[0][2] < 100.0


def test_elo_estimate_recovers_a_rating_from_two_opponents_and_narrows_with_games():
    expected = lambda r, o: 1.0 / (1.0 + 10 ** ((o - r) / 400))  # noqa: E731
    ratings = {"weak": 0.0, "strong": 400.0}
    few = elo_estimate({n: (expected(200.0, r), 50) for n, r in ratings.items()}, ratings)
    many = elo_estimate({n: (expected(200.0, r), 5000) for n, r in ratings.items()}, ratings)
    assert abs(few[0] - 200.0) < 1.0 and abs(many[0] - 200.0) < 1.0
    assert many[2] - many[1] < few[2] - few[1]
    with pytest.raises(ValueError):
        elo_estimate({"weak": (0.5, 0)}, ratings)


def test_benchmark_file_is_plain_json(built):
    bench, _, _ = built
    data = json.loads(bench.path.read_text())
    assert data["digest"] == TINY.digest() and data["engine"].startswith("Stockfish")
