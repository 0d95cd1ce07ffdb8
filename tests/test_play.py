"""chessrl play: a person against a checkpoint in the terminal (stdin fed to a subprocess), and
the Game contract's parse_action / format_action that it uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import chess
import numpy as np
import pytest
import torch

from chessrl.envs.tictactoe import TicTacToe
from chessrl.policy import Policy

PLAY = [sys.executable, "-m", "chessrl", "play"]


def play(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        PLAY + list(args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )


def test_tictactoe_game_to_the_end_with_illegal_input_re_prompted(tiny_ttt_run):
    # every cell in turn: taken ones are refused with one line and the prompt comes again
    moves = ["zz", "9", "?"] + [f"r{r}c{c}" for r in range(3) for c in range(3)]
    res = play(str(tiny_ttt_run), stdin="\n".join(moves) + "\n")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    out = res.stdout
    assert out.startswith("run step 2 (tictactoe): you play the first player")
    lines = out.splitlines()
    illegal = [ln for ln in lines if "illegal move" in ln]
    assert "illegal move: 'zz' is not a legal move here; type ? for the legal moves" in out
    assert "illegal move: action 9 is not legal here; type ? for the legal moves" in out
    assert "legal moves: r0c0, r0c1, r0c2, r1c0, r1c1, r1c2, r2c0, r2c1, r2c2" in out
    # each refusal is one line, and the prompt follows it
    assert out.count("your move: ") >= len(illegal) + 3
    for i, ln in enumerate(
        lines
    ):  # input is not echoed: the refusal follows its prompt on the line
        if "illegal move" in ln:
            assert ln.startswith("your move: illegal move: ") and lines[i + 1].startswith(
                "your move: "
            )
    assert "the policy plays r" in out
    assert lines[-1] in ("game over: you win", "game over: the policy wins", "game over: draw")


@pytest.mark.slow
def test_second_side_quit_and_a_bad_option_are_handled(tiny_ttt_run):
    res = play(str(tiny_ttt_run), "--side", "second", stdin="quit\n")
    assert (
        res.returncode == 0
        and "the policy plays" in res.stdout
        and res.stdout.rstrip().endswith("game abandoned")
    )
    res = play(str(tiny_ttt_run), stdin="")
    assert res.returncode == 0 and res.stdout.rstrip().endswith("game abandoned (end of input)")
    res = play(str(tiny_ttt_run), "--set", "env.max_plies=99", stdin="")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "max_plies" in res.stderr
    res = play(str(tiny_ttt_run), "--set", "trainer.lr=1", stdin="")
    assert res.returncode == 2 and "env.KEY=VALUE" in res.stderr and "Traceback" not in res.stderr


def chess_checkpoint(path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(44, 71, 1968, 16, 1, 2, 32)
    torch.save(
        {
            "policy": policy.state_dict(),
            "game": "chess",
            "step": 3,
            "policy_sizes": dict(policy.sizes),
            "config": {"env": {"name": "chess", "start": "random"}},
        },
        path,
    )
    return path


@pytest.mark.skipif(not shutil.which("/usr/games/stockfish"), reason="needs Stockfish")
def test_chess_in_uci_and_san_to_checkmate(tmp_path):
    ckpt = chess_checkpoint(tmp_path / "chess.pt")
    fen = tmp_path / "start.fen"
    fen.write_text("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1\n")
    res = play(
        str(ckpt),
        "--set",
        "env.start=file",
        "--set",
        f"env.start_file={fen}",
        "--set",
        "env.reward=none",
        stdin="e2e5\nRa9\n0000\n?\nRa8\n",
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "8 . . . . . . k ." in out and "  a b c d e f g h" in out  # the board, then its FEN
    assert (
        out.count("illegal move: '") == 2
        and "'e2e5' is not a legal move here (write it in UCI, e2e4, or SAN, e4)" in out
    )
    assert "illegal move: 0000 is not a move" in out
    board = chess.Board("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1")
    legal = [ln for ln in out.splitlines() if "legal moves: " in ln][0].split("legal moves: ")[1]
    assert sorted(legal.split(", ")) == sorted(board.san(m) for m in board.legal_moves)
    assert out.rstrip().splitlines()[-1] == "game over: you win (checkmate)"
    # as Black from the standard start (--set checked): the policy's first move is a legal move
    # in SAN
    res = play(
        str(ckpt),
        "--side",
        "second",
        "--set",
        "env.start=standard",
        "--set",
        "env.reward=none",
        stdin="e5\nquit\n",
    )
    policy_moves = [
        ln.split()[-1] for ln in res.stdout.splitlines() if ln.startswith("the policy plays")
    ]
    board = chess.Board()
    board.push_san(policy_moves[0])
    if board.is_legal(
        board.parse_uci("e7e5")
    ):  # the person's SAN move was played, the policy answered
        board.push_san("e5")
        board.push_san(policy_moves[1])
    assert res.returncode == 0 and res.stdout.rstrip().endswith("game abandoned")


def test_default_parse_action_reads_names_and_indices():
    game = TicTacToe()
    state = game.play([0], np.array([4]))[0]
    assert game.parse_action(state, " R0C0 ") == 0 and game.parse_action(state, "8") == 8
    assert game.format_action(state, 8) == "r2c2"
    for text, why in (
        ("r1c1", "'r1c1' is not a legal move here"),
        ("4", "action 4 is not legal here"),
        ("-1", "'-1' is not a legal move here"),
    ):
        with pytest.raises(ValueError, match=why):
            game.parse_action(state, text)


def test_chess_reads_uci_and_san_for_black_too():
    from chessrl.envs.chess.game import ChessGame, ChessState

    game = ChessGame(reward="none")
    board = chess.Board()
    board.push_uci("e2e4")
    state = ChessState(board)
    a = game.parse_action(state, "e5")
    assert game.parse_action(state, " e7e5 ") == a and game.format_action(state, a) == "e5"
    assert (
        game.action_to_str(a) == "e2e4"
    )  # the mirrored action vocabulary: black's e7e5 is action e2e4
    with pytest.raises(ValueError, match="'e2e4' is not a legal move here"):
        game.parse_action(state, "e2e4")
    assert "  a b c d e f g h" in game.render(state) and game.render(state).endswith(board.fen())


def test_an_env_override_that_changes_the_game_names_the_override(tmp_path):
    """--set env.features=attacks makes the chess observation vocabulary larger than the
    checkpoint's policy takes: the line names the --set item, not only the checkpoint."""
    from chessrl.errors import UserError
    from chessrl.player import player_from_state

    ckpt = chess_checkpoint(tmp_path / "chess.pt")
    state = torch.load(ckpt, weights_only=True)
    with pytest.raises(UserError) as err:
        player_from_state(ckpt, state, env={"features": "attacks", "reward": "none"})
    line = str(err.value)
    assert "does not fit game 'chess'" in line and "changed by --set env.features='attacks'" in line
