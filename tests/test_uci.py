"""chessrl uci: a checkpoint driven through python-chess's engine API against real Stockfish."""

from __future__ import annotations

import shutil
import subprocess
import sys

import chess
import chess.engine
import pytest
import torch

from chessrl.policy import Policy

STOCKFISH = "/usr/games/stockfish"
pytestmark = pytest.mark.skipif(not shutil.which(STOCKFISH), reason="needs Stockfish")
UCI = [sys.executable, "-m", "chessrl", "uci"]


def chess_checkpoint(path):
    """An untrained chess policy (small, seeded) as a run's step checkpoint."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(44, 71, 1968, 16, 1, 2, 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "policy": policy.state_dict(),
            "game": "chess",
            "step": 7,
            "policy_sizes": dict(policy.sizes),
            "config": {"env": {"name": "chess", "depth": 2, "start": "random"}},
        },
        path,
    )
    return path


def test_a_full_game_against_stockfish_through_python_chess(tmp_path):
    ckpt = chess_checkpoint(tmp_path / "myrun" / "checkpoints" / "step_0000007.pt")
    policy = chess.engine.SimpleEngine.popen_uci(UCI + [str(tmp_path / "myrun")], timeout=60)
    fish = chess.engine.SimpleEngine.popen_uci(STOCKFISH)
    try:
        assert policy.id["name"] == "chessrl myrun step 7"
        assert {"Mode", "Temperature", "Seed"} <= set(policy.options)
        # full strength at depth 1 (a skill level would add Stockfish's time-seeded randomness):
        # with the greedy policy the game is the same on every run
        board = chess.Board()
        while not board.is_game_over(claim_draw=True):
            engine, limit = (
                (policy, chess.engine.Limit(time=0.1))
                if board.turn == chess.WHITE
                else (fish, chess.engine.Limit(depth=1))
            )
            result = engine.play(board, limit)
            assert result.move in board.legal_moves, (result.move, board.fen())
            board.push(result.move)
            assert board.ply() < 600
        assert board.outcome(claim_draw=True) is not None
        assert board.is_checkmate()  # an untrained policy does not survive Stockfish
    finally:
        policy.quit()
        fish.quit()
    assert ckpt.exists()


def test_sampled_moves_follow_the_seed_and_greedy_ones_do_not_vary(tmp_path):
    ckpt = chess_checkpoint(tmp_path / "step_0000007.pt")
    board = chess.Board()
    board.push_uci("e2e4")
    with chess.engine.SimpleEngine.popen_uci(UCI + [str(ckpt)], timeout=60) as engine:
        greedy = {engine.play(board, chess.engine.Limit(depth=5), game=k).move for k in range(3)}
        assert len(greedy) == 1
        engine.configure({"Mode": "sampled", "Temperature": "5", "Seed": 11})
        first = [
            engine.play(board, chess.engine.Limit(nodes=1), game=("a", k)).move for k in range(6)
        ]
        again = [
            engine.play(board, chess.engine.Limit(nodes=1), game=("b", k)).move for k in range(6)
        ]
        assert all(m in board.legal_moves for m in first)
        # ucinewgame restarts the generator from Seed: every new game's first move is the same
        assert len(set(first)) == 1 and first == again


def test_protocol_details_go_infinite_waits_for_stop_and_bad_input_is_an_info_line(tmp_path):
    ckpt = chess_checkpoint(tmp_path / "step_0000007.pt")
    script = (
        "uci\nisready\nposition startpos moves e2e5\ngo\nsetoption name Temperature value hot\n"
        "position fen 6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1\ngo infinite\nisready\nstop\n"
        "position fen 7k/6Q1/6K1/8/8/8/8/8 b - - 0 1\ngo movetime 10\nquit\n"
    )
    res = subprocess.run(
        UCI + [str(ckpt)], input=script, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[lines.index("uciok") + 1] == "readyok"
    bad = [i for i, line in enumerate(lines) if line.startswith("info string bad position")]
    assert bad and "e2e5" in lines[bad[0]] and lines[bad[0] + 1] == "bestmove 0000"
    assert any(line.startswith("info string option temperature: bad value 'hot'") for line in lines)
    bestmoves = [i for i, line in enumerate(lines) if line.startswith("bestmove")]
    # go infinite: the engine still answers isready, and gives its move only after stop
    assert lines.index("readyok", bad[0]) < bestmoves[1]
    assert (
        chess.Move.from_uci(lines[bestmoves[1]].split()[1])
        in chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1").legal_moves
    )
    assert lines[bestmoves[2]] == "bestmove 0000"  # checkmated: no move


def test_a_missing_or_non_chess_checkpoint_is_one_line(tmp_path):
    res = subprocess.run(
        UCI + [str(tmp_path / "nothing.pt")],
        input="uci\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nothing.pt" in res.stderr
    ttt = tmp_path / "ttt.pt"
    with torch.random.fork_rng(devices=[]):
        policy = Policy(3, 9, 9, 16, 1, 2, 32)
    torch.save(
        {
            "policy": policy.state_dict(),
            "game": "tictactoe",
            "step": 1,
            "policy_sizes": dict(policy.sizes),
            "config": {"env": {"name": "tictactoe"}},
        },
        ttt,
    )
    res = subprocess.run(
        UCI + [str(ttt)], input="uci\nisready\n", capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "plays chess" in res.stderr
    # input that ends before any command needs the checkpoint: the failure is still one line
    res = subprocess.run(
        UCI + [str(ttt)], input="uci\nquit\n", capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "plays chess" in res.stderr and "Traceback" not in res.stderr


def test_an_impossible_position_is_refused_not_played(tmp_path):
    ckpt = chess_checkpoint(tmp_path / "step_0000007.pt")
    script = "uci\nisready\nposition fen 8/8/8/8/8/8/8/kK6 w - - 0 1\ngo\nquit\n"  # kings touch
    res = subprocess.run(
        UCI + [str(ckpt)], input=script, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    bad = [line for line in lines if line.startswith("info string bad position")]
    assert bad and "not a legal position" in bad[0]
    assert "bestmove 0000" in lines


def test_sigterm_ends_the_engine_in_one_line(tmp_path):
    """Every command, not only chessrl run, ends on SIGTERM with one line and exit 143."""
    import signal

    ckpt = chess_checkpoint(tmp_path / "step_0000007.pt")
    proc = subprocess.Popen(
        UCI + [str(ckpt)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write("uci\nisready\n")
    proc.stdin.flush()
    while proc.stdout.readline().strip() != "readyok":  # loaded and waiting for input
        pass
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip() == "chessrl: interrupted", err
