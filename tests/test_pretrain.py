"""chessrl pretrain: real Stockfish labels, cache reuse and resumption, label checks, no global
RNG."""

from __future__ import annotations

import contextlib
import io
import random
import shutil

import chess
import numpy as np
import pytest
import torch

from chessrl.config import PolicyConfig
from chessrl.envs.chess.evaluate import load_policy
from chessrl.envs.chess.pretrain import Labeller, labelled_data, load_pretrain_config, pretrain
from chessrl.errors import UserError
from chessrl.policy import build_policy

pytestmark = pytest.mark.skipif(not shutil.which("/usr/games/stockfish"), reason="needs Stockfish")

CONFIG = """
seed = 0
output = "{out}/pretrained.pt"
cache_dir = "{out}/cache"
[env]
engines = 2
[policy]
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
[data]
positions = 300
shard_size = 150
selfplay_fraction = 0.8
opening_plies = [0, 4]
selfplay_max_plies = 30
[labels]
depth = 3
multipv = 3
[train]
epochs = 4
batch_size = 32
lr = 3e-3
warmup_steps = 5
holdout_fraction = 0.3
threads = 1
progress = false
[checks]
min_distinct = 0.5
"""


def rng_states():
    return (
        torch.random.get_rng_state().clone(),
        np.random.get_state()[1].copy(),
        random.getstate(),
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    path = out / "pretrain.toml"
    path.write_text(CONFIG.format(out=out))
    before = rng_states()
    labeller = Labeller(load_pretrain_config(path))
    summary = pretrain(load_pretrain_config(path), log=lambda line: None, labeller=labeller)
    labeller.close()
    after = rng_states()
    return out, path, summary, labeller, (before, after)


def test_distillation_beats_random_on_held_out_positions(first_run):
    out, path, summary, labeller, _ = first_run
    assert labeller.searches == 300 and summary["cache"]["shards_generated"] == 2
    h, r = summary["heldout"], summary["random"]
    assert h["top1"] > r["top1"] + 0.05 and h["top5"] > r["top5"]
    assert h["loss"] < r["loss"]
    assert summary["checks"]["illegal_labels"] == 0 and summary["checks"]["distinct_fraction"] > 0.5


def test_no_global_rng_is_touched(first_run):
    before, after = first_run[4]
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_checkpoint_loads_as_init_checkpoint_and_in_eval(first_run):
    out = first_run[0]
    ckpt = out / "pretrained.pt"
    cfg = PolicyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, init_checkpoint=str(ckpt))

    class Game:  # only the sizes matter
        obs_vocab, obs_len, n_actions = 44, 71, 1968

    with torch.random.fork_rng(devices=[]):
        policy = build_policy(cfg, Game())
    saved = torch.load(ckpt, weights_only=False)
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in saved["policy"].items())
    evaluated, state, _ = load_policy(ckpt)
    assert state["config"]["env"]["name"] == "chess" and state["config"]["policy"]["d_model"] == 32


def test_second_run_reuses_the_cache_and_generation_resumes(first_run):
    out, path, _, _, _ = first_run
    cfg = load_pretrain_config(path)
    labeller = Labeller(cfg)
    _, facts = labelled_data(cfg, log=lambda line: None, labeller=labeller)
    assert labeller.pool is None and labeller.searches == 0 and facts["shards_loaded"] == 2
    # an interrupted generation: the missing shard alone is labelled again, identically
    shard = next(p for p in (out / "cache").glob("labels-*/shard_00001.npz"))
    old = np.load(shard)["fen"].copy()
    shard.unlink()
    _, facts = labelled_data(cfg, log=lambda line: None, labeller=labeller)
    labeller.close()
    assert facts["shards_generated"] == 1 and facts["shards_loaded"] == 1
    assert labeller.searches == 150
    assert np.array_equal(np.load(shard)["fen"], old)
    # a damaged shard (cut short) is labelled again the same way, not a traceback
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    labeller = Labeller(cfg)
    _, facts = labelled_data(cfg, log=lambda line: None, labeller=labeller)
    labeller.close()
    assert facts["shards_generated"] == 1 and np.array_equal(np.load(shard)["fen"], old)


def test_pretraining_with_check_features_and_the_pair_head_reuses_the_labels(first_run, tmp_path):
    """[env] features and [policy] head reach pretraining: the same label cache serves the
    checks encoding (no engine search), the checkpoint's policy tells its encoding, its
    training tokens are the game's own observation of each position, and eval loads it."""
    from chessrl.envs.chess import encoding as enc
    from chessrl.envs.chess.game import ChessGame, ChessState
    from chessrl.envs.chess.pretrain_data import tokens_for

    out, path, _, _, _ = first_run
    sets = ["env.features=checks", "policy.head=pairs", f"output={tmp_path}/checks.pt"]
    cfg = load_pretrain_config(path, sets)
    labeller = Labeller(cfg)
    summary = pretrain(cfg, log=lambda line: None, labeller=labeller)
    labeller.close()
    assert labeller.searches == 0 and summary["cache"]["shards_loaded"] == 2
    assert summary["heldout"]["top1"] > summary["random"]["top1"]
    policy, state, _ = load_policy(tmp_path / "checks.pt")
    assert state["policy_sizes"]["obs_vocab"] == enc.OBS_VOCAB_CHECKS
    assert enc.features_of(policy) == "checks"
    data, _ = labelled_data(cfg, log=lambda line: None, labeller=Labeller(cfg))
    tokens = tokens_for(data, "checks")
    game = ChessGame(reward="none", features="checks")
    rows = range(0, len(tokens), 37)
    own = game.observe([ChessState(chess.Board(data["fen"][i])) for i in rows])
    assert np.array_equal(tokens[list(rows), :64], own.tokens[:, :64])
    shift = enc.N_CHECK_SQUARE_TOKENS - enc.N_SQUARE_TOKENS
    assert np.array_equal(tokens[:, 64:], data["tokens"][:, 64:].astype(np.int64) + shift)


def test_cli_pretrain_uses_cache_and_label_checks_fail_clearly(first_run):
    from chessrl.cli import main

    out, path, _, _, _ = first_run
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as stdout:
        rc = main(["pretrain", str(path), "--set", "checks.min_distinct=0.999", "--no-progress"])
    assert rc == 2 and "label checks failed" in err.getvalue() and "min_distinct" in err.getvalue()
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet, contextlib.redirect_stdout(io.StringIO()) as stdout:
        rc = main(
            [
                "pretrain",
                str(path),
                "--set",
                "train.epochs=1",
                "--set",
                f"output='{out}/again.pt'",
                "--no-progress",
            ]
        )
    assert rc == 0
    assert "2 shards from the cache, 0 generated, 0 engine searches" in stdout.getvalue()
    assert (out / "again.pt").exists() and (out / "again.json").exists()


def test_corrupt_labels_and_bad_config_are_user_errors(first_run, tmp_path):
    out, path, _, _, _ = first_run
    cache = tmp_path / "cache"
    shutil.copytree(out / "cache", cache)
    shard = next(cache.glob("labels-*/shard_00000.npz"))
    arrays = dict(np.load(shard))
    arrays["uci"][0, 0] = "a1a8"  # not a legal move there
    np.savez(shard, **arrays)
    cfg = load_pretrain_config(path, [f"cache_dir='{cache}'"])
    with pytest.raises(UserError, match="illegal"):
        pretrain(cfg, log=lambda line: None, labeller=Labeller(cfg))
    with pytest.raises(UserError, match="did you mean 'multipv'"):
        load_pretrain_config(path, ["labels.multi_pv=3"])
    with pytest.raises(UserError, match="exactly one of depth"):
        load_pretrain_config(path, ["labels.nodes=100"])


def test_every_pretrain_key_is_documented():
    from pathlib import Path

    from chessrl.envs.chess.pretrain import PretrainConfig
    from chessrl.schema import describe

    text = (Path(__file__).resolve().parents[1] / "docs" / "pretraining.md").read_text()
    keys = [
        r["key"] for r in describe(PretrainConfig) if not r["key"].startswith(("policy.", "env"))
    ]
    assert not [k for k in keys if f"`{k}`" not in text]


def test_config_mistakes_are_one_line_like_a_training_config(tmp_path, cli_in_process):
    """The same loader as `chessrl run`: file and line, or the --set item; exit code 2."""
    path = tmp_path / "p.toml"
    path.write_text("seed = 0\n[labels]\ndepth = 3\nmulti_pv = 3\n")
    rc, _, err = cli_in_process("pretrain", str(path), "--no-progress")
    assert rc == 2 and f"{path}:4: unknown key 'labels.multi_pv'" in err, err
    assert "did you mean 'multipv'" in err and len(err.strip().splitlines()) == 1
    path.write_text("seed = 0\n")
    rc, _, err = cli_in_process("pretrain", str(path), "--set", "train.epochs=0")
    assert rc == 2 and "--set train.epochs=0: 'train.epochs' = 0" in err, err
    path.write_text('seed = 0\n[env]\nname = "tictactoe"\n')
    rc, _, err = cli_in_process("pretrain", str(path))
    assert rc == 2 and f"{path}:3: 'env.name' = 'tictactoe': pretraining is chess-only" in err


@pytest.mark.parametrize(
    "output, says",
    [
        ("{dir}", "give the checkpoint's file name"),
        ("{dir}/pre.json", "give the checkpoint a .pt name"),
        ("{dir}/afile/pre.pt", "is a file, not a directory"),
    ],
)
def test_an_output_path_that_cannot_work_is_refused_before_any_work(
    tmp_path, cli_in_process, output, says
):
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "p.toml"
    path.write_text(f'seed = 0\noutput = "{output.format(dir=tmp_path)}"\n')
    rc, _, err = cli_in_process("pretrain", str(path), "--no-progress")
    assert rc == 2 and f"{path}:2: output = " in err and says in err, err
    assert len(err.strip().splitlines()) == 1


def test_sigterm_while_labelling_keeps_the_shards_and_says_how_to_continue(tmp_path):
    """SIGTERM mid-labelling: exit 143 and one line saying the shards are kept and the command
    that continues from them."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "p.toml"
    path.write_text(CONFIG.format(out=tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "chessrl", "pretrain", str(path), "--no-progress"]
        + ["--set", "data.positions=30000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout.readline().startswith("labelled shard 1/")  # labelling is under way
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    lines = [line for line in out.splitlines() if not line.startswith("labelled shard")]
    assert len(lines) == 1 and lines[0].startswith("chessrl: interrupted; the labelled shards"), out
    assert f"continues from them: chessrl pretrain {path}" in lines[0]
    assert list((tmp_path / "cache").glob("labels-*/shard_00000.npz"))
