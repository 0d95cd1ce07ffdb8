"""Data-parallel GRPO: 2 processes on CPU with gloo stay in lockstep; rank 0 alone writes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from chessrl.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: str, run_dir: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        WANDB_MODE="disabled",
    )
    torch.set_num_threads(1)
    from chessrl import trainer
    from chessrl.config import load_config

    captured = {}
    original = trainer.grpo_step  # chessrl.step.grpo_step; the loop looks it up in chessrl.trainer

    def spy(run, step):  # keep this rank's policy after the last step
        m = original(run, step)
        captured["policy"] = {k: v.clone() for k, v in run.policy.state_dict().items()}
        captured.setdefault("boards", []).append(
            [run.game.state_to_str(x) for x in run.env.game_states()]
        )
        return m

    trainer.grpo_step = spy
    trainer.train(
        load_config(config, ["trainer.steps=2"]), Path(run_dir), progress=False, echo=lambda s: None
    )
    torch.save(captured, f"{out}/rank{rank}.pt")


def test_two_ranks_keep_identical_parameters(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    mp.start_processes(
        _worker,
        args=(2, _free_port(), str(tiny_config), str(run_dir), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in r0["policy"]:
        assert torch.equal(r0["policy"][k], r1["policy"][k]), k
    # the step moved the weights (so equality is not trivial) ...
    init = torch.load(run_dir / "checkpoints" / "initial.pt", weights_only=False)["policy"]
    assert any(not torch.equal(init[k], r0["policy"][k]) for k in init)
    # ... and the ranks played different games
    assert r0["boards"] != r1["boards"]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert not list(run_dir.glob("*rank1*"))


@pytest.mark.slow
def test_torchrun_cli(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launch += ["--master_port", str(_free_port())]
    run = ["-m", "chessrl", "run", str(tiny_config), "--no-progress"]

    def chessrl(*args: str, torchrun: bool = True) -> subprocess.CompletedProcess:
        cmd = (launch if torchrun else [sys.executable]) + run + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)

    res = chessrl("--run-dir", str(run_dir), "--max-steps", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    res = chessrl("--run-dir", str(run_dir), "--max-steps", "2", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    # the same run resumed by one process would be another experiment: refused in one line
    res = chessrl("--run-dir", str(run_dir), "--resume", torchrun=False)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "trained by 2 process(es), resumed by 1" in res.stderr
    assert "torchrun --nproc_per_node=2 -m chessrl" in res.stderr
    # a config mistake under torchrun is said once (by rank 0), not once per rank
    res = chessrl("--run-dir", str(tmp_path / "bad"), "--set", "trainer.lr=inf")
    assert res.returncode != 0
    assert res.stderr.count("chessrl: error: --set trainer.lr=inf") == 1, res.stderr[-3000:]
