"""chessrl eval: real Stockfish and python-chess; PGN read back; CIs; failures are errors."""

from __future__ import annotations

import io
import json
import random
import stat

import chess
import chess.pgn
import numpy as np
import pytest
import torch

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.evaluate import Opponent, evaluate, load_policy
from chessrl.envs.chess.options import ChessOptions
from chessrl.errors import UserError
from chessrl.match import MatchError
from chessrl.policy import Policy

STOCKFISH = "/usr/games/stockfish"
pytestmark = pytest.mark.skipif(not __import__("shutil").which(STOCKFISH), reason="needs Stockfish")


def tiny_checkpoint(path, stockfish_path=STOCKFISH, features="pieces"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = Policy(enc.obs_vocab(features), 71, 1968, 16, 1, 2, 32)
    sizes = {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32}
    torch.save(
        {
            "policy": policy.state_dict(),
            "game": "chess",
            "step": 0,
            "policy_sizes": dict(policy.sizes),
            "config": {
                "env": {
                    "name": "chess",
                    "engines": 2,
                    "depth": 2,
                    "stockfish_path": stockfish_path,
                    "engine_retries": 0,
                    "engine_timeout": 5.0,
                    "features": features,
                },
                "policy": sizes,
            },
        },
        path,
    )
    return path


def rng_states():
    return (
        torch.random.get_rng_state().clone(),
        np.random.get_state()[1].copy(),
        random.getstate(),
    )


def test_random_and_policy_vs_skill0_pgn_reads_back(tmp_path):
    policy, _, _ = load_policy(tiny_checkpoint(tmp_path / "step_0000001.pt"))
    before = rng_states()
    pgn = tmp_path / "games.pgn"
    res = evaluate(
        {"checkpoint": policy, "random": "random"},
        ChessOptions(depth=2, engines=2),
        Opponent("skill", 0),
        games=4,
        seed=3,
        opening_plies=4,
        max_plies=16,
        pgn=pgn,
    )
    after = rng_states()
    assert (
        torch.equal(before[0], after[0])
        and np.array_equal(before[1], after[1])
        and before[2] == after[2]
    )
    assert len(res.protocol["openings"]) == 2
    fh = io.StringIO(pgn.read_text())
    games = []
    while (g := chess.pgn.read_game(fh)) is not None:
        games.append(g)
    assert len(games) == 8 and not any(g.errors for g in games)
    for k, (name, r) in enumerate(res.rows.items()):
        assert r.games == 4 and r.wins + r.draws + r.losses == 4
        lo, hi = r.interval()
        assert 0.0 <= lo <= r.score <= hi <= 1.0
        for i, g in enumerate(games[4 * k : 4 * k + 4]):
            h = g.headers
            policy_white = i % 2 == 0
            assert (h["White"] if policy_white else h["Black"]) == name
            assert (
                h["Black"] if policy_white else h["White"]
            ) == "Stockfish (Skill Level 0, depth 1)"
            # standard Termination values; chessrl's own reason in a custom tag and the last comment
            assert (
                h["TerminationReason"] in r.reasons
                and h["OpeningPlies"] == "4"
                and h["Round"] == str(i + 1)
            )
            assert h["Termination"] == (
                "adjudication" if h["TerminationReason"] == "adjudicated" else "normal"
            )
            assert g.end().comment.endswith(h["TerminationReason"].replace("_", " "))
            assert "Opening" not in h and "FEN" not in h and "SetUp" not in h
            assert (
                h["Result"]
                == {
                    1.0: "1-0" if policy_white else "0-1",
                    0.0: "0-1" if policy_white else "1-0",
                    0.5: "1/2-1/2",
                }[r.results[i]]
            )
            board = g.end().board()
            if h["Termination"] == "checkmate":
                assert board.is_checkmate() and h["Result"] == (
                    "0-1" if board.turn == chess.WHITE else "1-0"
                )
            assert len(list(g.mainline_moves())) <= 4 + 16
        # both colours of an opening start with the same moves, which are in the movetext
        first, second = (list(g.mainline_moves())[:4] for g in games[4 * k : 4 * k + 2])
        assert first == second and len(first) == 4
        assert (
            games[4 * k]
            .variations[0]
            .variations[0]
            .variations[0]
            .variations[0]
            .comment.startswith("end of the opening")
        )


def test_cli_json_and_elo_range(tmp_path, cli_in_process):
    (tmp_path / "myrun" / "checkpoints").mkdir(parents=True)
    ckpt = tiny_checkpoint(tmp_path / "myrun" / "checkpoints" / "step_0000002.pt")
    tiny_checkpoint(tmp_path / "myrun" / "checkpoints" / "initial.pt")
    rc, stdout, stderr = cli_in_process(
        "eval",
        str(tmp_path / "myrun"),
        "--games",
        "2",
        "--depth",
        "1",
        "--max-plies",
        "6",
        "--opening-plies",
        "2",
        "--json",
        "--baselines",
        "--pgn",
        str(tmp_path / "b.pgn"),
    )
    assert rc == 0, stderr
    out = json.loads(stdout)
    assert (
        set(out["rows"]) == {"checkpoint", "random", "initial"}
        and out["opponent"] == "stockfish depth 1"
    )
    assert all(
        row["games"] == 2 and 0 <= row["score_lo"] <= row["score_hi"] <= 1
        for row in out["rows"].values()
    )
    # the PGN names the checkpoint by run and step, and the opponent with its settings
    fh = io.StringIO((tmp_path / "b.pgn").read_text())
    headers = []
    while (g := chess.pgn.read_game(fh)) is not None:
        headers.append(g.headers)
    assert [h["White"] for h in headers] == [
        "chessrl myrun step 2",
        "Stockfish (depth 1)",
        "random mover (seed 0)",
        "Stockfish (depth 1)",
        "chessrl myrun initial",
        "Stockfish (depth 1)",
    ]
    assert all(h["Termination"] in ("normal", "adjudication") for h in headers)
    rc, _, stderr = cli_in_process("eval", str(ckpt), "--elo", "1000")
    assert rc == 2 and "1350..2850" in stderr and "Traceback" not in stderr
    rc, _, stderr = cli_in_process("eval", str(ckpt), "--skill", "0", "--depth", "3")
    assert rc == 2 and "not allowed with" in stderr


def test_engine_failure_is_an_error_not_a_draw(tmp_path, cli_in_process):
    fake = tmp_path / "fakefish"
    fake.write_text(
        '#!/bin/sh\nwhile read line; do case "$line" in\n'
        " uci) echo 'id name fake'; echo uciok;;\n"
        " isready) echo readyok;;\n go*) exit 1;;\n quit) exit 0;;\n esac; done\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(MatchError) as info:
        evaluate(
            {"random": "random"},
            ChessOptions(depth=2, engines=1, stockfish_path=str(fake), engine_retries=0),
            Opponent("depth", 1),
            games=2,
            opening_plies=0,
            max_plies=4,
        )
    assert info.value.games and "opponent" in str(info.value)
    ckpt = tiny_checkpoint(tmp_path / "step_0000003.pt", stockfish_path=str(fake))
    rc, stdout, stderr = cli_in_process(
        "eval",
        str(ckpt),
        "--games",
        "2",
        "--depth",
        "1",
        "--opening-plies",
        "0",
        "--max-plies",
        "4",
    )
    assert rc == 1 and "game" in stderr and "never scored" in stderr
    assert "Traceback" not in stderr and "draw" not in stdout.lower()
    rc, _, stderr = cli_in_process(
        "eval", str(ckpt), "--games", "2", "--depth", "1", "--opening-plies", "2"
    )
    assert rc == 1 and "choosing the openings" in stderr and "Traceback" not in stderr


def test_bad_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "x.pt").write_text("not a checkpoint")
    with pytest.raises(UserError):
        load_policy(tmp_path / "x.pt")


def test_a_set_up_start_is_recorded_with_fen_and_setup():
    from chessrl.envs.chess.pgn import game_record

    board = chess.Board("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1")
    for uci in ("a1a8",):
        board.push_uci(uci)
    g = game_record(
        board,
        white="a",
        black="b",
        result="1-0",
        termination="checkmate",
        opening_plies=0,
        round_=1,
    )
    back = chess.pgn.read_game(io.StringIO(str(g)))
    h = back.headers
    assert (
        h["FEN"] == "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1" and h["SetUp"] == "1" and "Opening" not in h
    )
    assert (
        h["Termination"] == "normal"
        and h["TerminationReason"] == "checkmate"
        and h["Result"] == "1-0"
    )
    assert back.end().board().is_checkmate() and back.end().comment == "checkmate"


@pytest.mark.parametrize("features", ["attacks", "checks"])
def test_a_policy_trained_on_attack_features_is_evaluated_with_them(tmp_path, features):
    """A checkpoint of an `[env] features = "attacks"` (or "checks") run loads, plays its games
    and answers the benchmark from observations in its encoding: its moves are the argmax over
    tokens that carry the attack counts (another encoding would give other logits)."""
    from chessrl.envs.chess.benchmark import choose_fn
    from chessrl.envs.chess.game import ChessGame, ChessState
    from chessrl.policy import log_probs

    policy, state, _ = load_policy(tiny_checkpoint(tmp_path / "a.pt", features=features))
    assert (
        policy.sizes["obs_vocab"] == enc.obs_vocab(features) and enc.features_of(policy) == features
    )
    boards = [chess.Board(), chess.Board("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w")]
    obs = ChessGame(reward="none", features=features).observe([ChessState(b) for b in boards])
    lp = log_probs(policy, torch.as_tensor(obs.tokens), torch.as_tensor(obs.action_mask), 1.0)
    want = [enc.action_to_move(int(a), b.turn) for a, b in zip(lp.argmax(-1), boards)]
    assert choose_fn(policy)(boards) == want
    result = evaluate(
        {"checkpoint": policy},
        ChessOptions(stockfish_path=STOCKFISH, engines=1, depth=1),
        Opponent("depth", 1),
        games=2,
        opening_plies=2,
        max_plies=8,
    )
    assert result.rows["checkpoint"].games == 2
