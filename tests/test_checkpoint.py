"""Checkpoints are shared files: loading one never runs code, on every path that loads one."""

from __future__ import annotations

import pathlib
import subprocess

import numpy as np
import pytest
import torch

from chessrl import checkpoint
from chessrl.errors import UserError


class _Payload:
    """Unpickling this runs ``Path.touch(marker)``: what an attacker's checkpoint would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _malicious(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    state = {"step": 1, "policy": {"w": torch.zeros(2)}, "config": {}, "payload": _Payload(marker)}
    torch.save(state, path)
    return path


def test_the_payload_really_runs_code_under_an_unsafe_load(tmp_path):
    # guards the test itself: the file is only a proof if an unsafe load would execute it
    marker = tmp_path / "pwned"
    torch.load(_malicious(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_refuses_a_file_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UserError, match="refused") as info:
        checkpoint.load(_malicious(tmp_path / "evil.pt", marker))
    assert not marker.exists()
    assert "\n" not in str(info.value)


def test_numpy_state_is_stored_as_plain_data_and_round_trips(tmp_path):
    state = {
        "a": np.float32(1.5),
        "b": np.arange(3),
        "c": [np.int64(2), (np.bool_(True), "x")],
        "p": pathlib.Path("/tmp/x"),
        "t": torch.ones(2),
        "n": None,
    }
    path = checkpoint.write(tmp_path / "ok.pt", state)
    back = checkpoint.load(path)
    assert back["a"] == 1.5 and isinstance(back["a"], float)
    assert torch.equal(back["b"], torch.arange(3)) and back["c"] == [2, (True, "x")]
    assert back["p"] == "/tmp/x" and torch.equal(back["t"], torch.ones(2)) and back["n"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["ok.pt"]  # no temp file left behind


def test_unsaveable_state_leaves_no_temp_file(tmp_path):
    with pytest.raises(TypeError, match="only tensors and plain data"):
        checkpoint.write(tmp_path / "x.pt", {"obj": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import TINY_TTT, run_cli

    d = tmp_path_factory.mktemp("ck")
    (d / "tiny.toml").write_text(TINY_TTT)
    r = run_cli("run", str(d / "tiny.toml"), "--run-dir", str(d / "run"), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    return d


def _refused(r: subprocess.CompletedProcess, marker: pathlib.Path) -> None:
    assert not marker.exists(), "the checkpoint's payload ran"
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert any("refused" in ln for ln in lines) and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_every_cli_path_refuses_a_malicious_checkpoint(trained_run, cli):
    d = trained_run
    marker = d / "pwned"
    run = d / "run"
    # 1. --resume: the latest step checkpoint (step 2, whose metrics row is there) is the
    # attacker's (a later step without a row would not be resumed from at all)
    _malicious(run / "checkpoints" / "step_0000002.pt", marker)
    _refused(
        cli("run", str(d / "tiny.toml"), "--run-dir", str(run), "--resume", "--max-steps", "1"),
        marker,
    )
    # 2. eval FILE and 3. eval RUN_DIR
    evil = _malicious(d / "evil.pt", marker)
    _refused(cli("eval", str(evil), "--games", "2"), marker)
    _refused(cli("eval", str(run), "--games", "2"), marker)
    # 4. policy.init_checkpoint
    _refused(
        cli(
            "run",
            str(d / "tiny.toml"),
            "--run-dir",
            str(d / "fresh"),
            "--max-steps",
            "1",
            "--set",
            f"policy.init_checkpoint={evil}",
        ),
        marker,
    )
    assert not (d / "fresh" / "metrics.jsonl").exists()


def test_write_policy_holds_the_fields_players_and_init_checkpoint_read(tmp_path):
    """The one writer of a policy checkpoint (pretraining's, and the trainer's fields): the file
    loads as a player, with the game rebuilt from its config, and as policy.init_checkpoint."""
    from chessrl.config import PolicyConfig
    from chessrl.envs.tictactoe import TicTacToe
    from chessrl.player import load_player
    from chessrl.policy import build_policy

    cfg = PolicyConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, head_dim=4)
    with torch.random.fork_rng(devices=[]):
        policy = build_policy(cfg, TicTacToe())
    path = checkpoint.write_policy(
        tmp_path / "p.pt",
        policy,
        game="tictactoe",
        config={"env": {"name": "tictactoe"}},
        note="extra",
    )
    state = checkpoint.load(path)
    assert {"step", "policy", "config", "game", "policy_sizes", "note"} <= set(state)
    assert state["step"] == 0 and state["policy_sizes"] == policy.sizes
    player = load_player(path)
    assert player.game.name == "tictactoe" and player.name == "p"
    assert all(torch.equal(v, player.policy.state_dict()[k]) for k, v in state["policy"].items())
    with torch.random.fork_rng(devices=[]):
        again = build_policy(
            PolicyConfig(**{**vars(cfg), "init_checkpoint": str(path)}), TicTacToe()
        )
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state["policy"].items())


def test_an_init_checkpoint_of_another_shape_names_what_differs(tmp_path):
    """policy.init_checkpoint whose sizes or observation vocabulary differ from the configured
    policy's: one UserError naming each differing size, checkpoint -> config, and that the
    vocabulary comes from the game's options."""
    from chessrl.config import PolicyConfig
    from chessrl.envs.tictactoe import TicTacToe
    from chessrl.errors import UserError
    from chessrl.policy import build_policy

    cfg = PolicyConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, head_dim=4)
    with torch.random.fork_rng(devices=[]):
        policy = build_policy(cfg, TicTacToe())
    path = checkpoint.write_policy(tmp_path / "p.pt", policy, game="tictactoe", config={})

    class Wider(TicTacToe):
        obs_vocab = 5  # as if an [env] option changed the encoding

    with pytest.raises(UserError) as err:
        build_policy(
            PolicyConfig(**{**vars(cfg), "d_ff": 64, "init_checkpoint": str(path)}), Wider()
        )
    line = str(err.value)
    assert "\n" not in line and "d_ff 32 -> 64" in line and "obs_vocab 3 -> 5" in line
    assert "[env] options" in line


def _small_policy_file(tmp_path: pathlib.Path) -> pathlib.Path:
    from chessrl.config import PolicyConfig
    from chessrl.envs.tictactoe import TicTacToe
    from chessrl.policy import build_policy

    cfg = PolicyConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, head_dim=4)
    with torch.random.fork_rng(devices=[]):
        policy = build_policy(cfg, TicTacToe())
    return checkpoint.write_policy(
        tmp_path / "p.pt", policy, game="tictactoe", config={"env": {"name": "tictactoe"}}
    )


def test_a_damaged_file_is_called_damaged_not_dangerous(tmp_path):
    good = _small_policy_file(tmp_path).read_bytes()
    files = {
        "random.pt": np.random.default_rng(0).bytes(3000),
        "cut.pt": good[: len(good) // 2],
        "empty.pt": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError) as info:
            checkpoint.load(tmp_path / name)
        line = str(info.value)
        assert "damaged or not a checkpoint" in line and "could run code" not in line, line
        assert "\n" not in line and "use another checkpoint" in line


@pytest.mark.parametrize(
    "key, value",
    [
        ("config", "a string"),
        ("step", "abc"),
        ("coefficients", 5),
        ("policy", "weights"),
        ("policy_sizes", {"d_model": [1 << 30]}),
        ("game", 3),
    ],
)
def test_a_crafted_checkpoint_is_refused_before_any_of_it_is_used(tmp_path, key, value):
    state = checkpoint.load(_small_policy_file(tmp_path))
    torch.save({**state, key: value}, tmp_path / "crafted.pt")
    with pytest.raises(UserError, match=rf"not a valid chessrl checkpoint: '{key}' holds"):
        checkpoint.load(tmp_path / "crafted.pt")


def test_recorded_sizes_the_weights_cannot_back_are_refused_without_allocating(tmp_path):
    """A file that records huge sizes next to small weights is refused from the shapes alone
    (built on the meta device), never by trying to allocate the huge policy."""
    from chessrl.player import build_game, build_policy

    state = checkpoint.load(_small_policy_file(tmp_path))
    state["policy_sizes"] = {**state["policy_sizes"], "d_model": 1 << 20, "d_ff": 1 << 20}
    with pytest.raises(UserError, match="do not fit the recorded policy sizes"):
        build_policy(state, build_game(state), "crafted.pt")
