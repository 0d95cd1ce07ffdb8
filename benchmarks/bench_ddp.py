r"""Data-parallel scaling on CPU: 2 torchrun processes (gloo) vs 1, positions per second.

Writes a small tic-tac-toe config to a temporary directory (exact minimax rewards, so no
Stockfish time; the model and the rollout loop are what scale) and trains it twice through
the documented entry point:

    torchrun --standalone --nproc_per_node=N -m chessrl run CONFIG --run-dir DIR \
        --max-steps K --no-progress

for N = 1 and N = ``--procs`` (2). Every rank samples its own roots, so one step of N ranks
trains N times the plies of one rank. Rank 0 writes ``DIR/metrics.jsonl``; from it this
script takes ``time/step`` and ``train/trained_plies`` (metrics are averaged over ranks, so
this is the plies of one rank, and the step time the mean over ranks) of every step
after the first ``--skip`` and reports

    throughput = trained plies x world size / step time      (positions/s)

and the ratio N-process / 1-process throughput. ``torchrun`` gives each of N > 1 processes
one intra-op thread (OMP_NUM_THREADS=1); the single process keeps torch's default (all cores).
A third run, 1 process with 1 thread (what each DDP rank gets), gives the scaling ratio
against a like-for-like rank (ideal: N x); on a busy machine the multi-threaded single process
can collapse (its threads wait on each other), which inflates the first ratio.

If the trainer has no distributed support yet, or a run fails, or rank 0's metrics do not look
like a DDP run (one row per step), it prints ``DDP not available: <reason>`` and the JSON
``{"ddp": null, "reason": ...}`` rather than a number.

    .venv/bin/python benchmarks/bench_ddp.py [--procs 2] [--steps 8] [--skip 2]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONFIG = """\
# bench_ddp.py: tic-tac-toe, big enough per step that the model math is most of it
name = "bench-ddp"
seed = 0
device = "cpu"

[env]
name = "tictactoe"

[policy]
d_model = 128
n_layers = 2
n_heads = 4
d_ff = 512

[rollout]
roots = {roots}
group_size = 16
plies = 9
temperature = 1.0
train_plies = "both"

[trainer]
steps = 100000
lr = 3e-4
budget_every = 0
eval_every = 0
checkpoint_every = 100000

[logging]
wandb = "disabled"
progress = false

[plugins.entropy_bonus]
coef = 0.001
"""


class Unavailable(Exception):
    """DDP cannot be measured; the message says why."""


def distributed_support() -> str | None:
    """None when chessrl's source sets up torch.distributed, else the reason it does not."""
    import importlib.util

    spec = importlib.util.find_spec("chessrl")
    if spec is None or not spec.submodule_search_locations:
        return "chessrl is not importable"
    roots = [Path(p) for p in spec.submodule_search_locations]
    for root in roots:
        for path in root.rglob("*.py"):
            text = path.read_text(errors="ignore")
            if "init_process_group" in text:
                return None
    return (
        "the trainer does not call torch.distributed.init_process_group "
        "(no DDP support in chessrl yet)"
    )


def train(
    procs: int, config: Path, run_dir: Path, steps: int, timeout: float, threads: int | None = None
) -> tuple[list[dict], float]:
    """Run torchrun with ``procs`` processes (``threads`` intra-op threads each if given);
    rank 0's metrics rows and the wall time."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        "-m",
        "chessrl",
        "run",
        str(config),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        str(steps),
        "--no-progress",
    ]
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{procs}-process run did not finish within {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(f"--- {procs}-process run, last lines of its output ---\n")
        sys.stderr.write("\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:]) + "\n")
        raise Unavailable(
            f"{procs}-process run exited with {proc.returncode}: {first_error(proc.stderr)}"
        )
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise Unavailable(f"{procs}-process run wrote no {path.name} in its run directory")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != steps or [r.get("step") for r in rows] != list(range(1, steps + 1)):
        raise Unavailable(
            f"{procs}-process run: metrics.jsonl has {len(rows)} rows for {steps} steps "
            "(expected one row per step from rank 0 only)"
        )
    return rows, wall


def first_error(stderr: str) -> str:
    """The line that says what went wrong, out of a failed torchrun's output (not its banner)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("chessrl: error") or re.search(
            r"^(\[rank\d+\]:\s*)?\w*(Error|Exception)\b.*:", line
        ):
            return line[:300]
    noise = (
        "error_file",
        "traceback",
        "====",
        "----",
        "Failures",
        "Root Cause",
        "time ",
        "host ",
        "rank ",
        "local_rank",
        "exitcode",
        "<NO_OTHER_FAILURES>",
        "[0]",
        "[1]",
    )
    useful = [line for line in lines if not line.startswith(noise) and "elastic" not in line]
    return (useful[-1] if useful else "no error message")[:300]


def summarise(rows: list[dict], skip: int, procs: int) -> dict:
    timed = rows[skip:]
    step = statistics.fmean(r["time/step"] for r in timed)
    plies = statistics.fmean(r["train/trained_plies"] for r in timed)
    return {
        "procs": procs,
        "steps_timed": len(timed),
        "step_s": round(step, 4),
        "steps_per_s": round(1 / step, 3),
        "trained_plies_per_rank": round(plies, 1),
        "positions_per_s": round(plies * procs / step, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2, help="processes of the DDP run (vs 1)")
    parser.add_argument("--steps", type=int, default=8, help="steps per run")
    parser.add_argument(
        "--skip", type=int, default=2, help="first steps left out of the means (warm-up)"
    )
    parser.add_argument("--roots", type=int, default=16, help="roots per rank per step")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error("--steps must exceed --skip")

    import torch

    result: dict = {
        "procs": args.procs,
        "backend": "gloo",
        "game": "tictactoe",
        "roots_per_rank": args.roots,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    try:
        if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
            raise Unavailable("this torch build has no torch.distributed gloo backend")
        reason = distributed_support()
        if reason:
            raise Unavailable(reason)
        with tempfile.TemporaryDirectory(prefix="bench_ddp-") as tmp:
            config = Path(tmp) / "ddp.toml"
            config.write_text(CONFIG.format(roots=args.roots))
            runs = {}
            # 1 process at torch's default threads (all cores), 1 process at 1 thread (what each DDP
            # rank gets), N processes
            for key, procs, threads in (
                (1, 1, None),
                ("1x1", 1, 1),
                (args.procs, args.procs, None),
            ):
                rows, wall = train(
                    procs, config, Path(tmp) / f"run-{key}", args.steps, args.timeout, threads
                )
                runs[key] = summarise(rows, args.skip, procs) | {
                    "wall_s": round(wall, 2),
                    "threads": threads or (torch.get_num_threads() if procs == 1 else 1),
                }
                r = runs[key]
                label = (
                    f"{procs} process{'es' if procs > 1 else ''}, "
                    f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
                )
                print(
                    f"{label:<22}: step {r['step_s']:.3f} s, "
                    f"{r['trained_plies_per_rank']:.0f} trained plies per rank, "
                    f"{r['positions_per_s']:8.1f} positions/s  (run {wall:.1f} s incl. start-up)",
                    flush=True,
                )
    except Unavailable as exc:
        print(f"DDP not available: {exc}")
        print(json.dumps(result | {"ddp": None, "reason": str(exc)}))
        return

    single, single1, multi = runs[1], runs["1x1"], runs[args.procs]
    ratio = multi["positions_per_s"] / single["positions_per_s"]
    ratio1 = multi["positions_per_s"] / single1["positions_per_s"]
    print(
        f"throughput ratio {args.procs} processes / 1 process: {ratio:.2f}x; "
        f"/ 1 single-threaded process: {ratio1:.2f}x "
        f"(ideal {args.procs:.0f}x; {os.cpu_count()} cores; gloo)"
    )
    print(
        json.dumps(
            result
            | {
                "ddp": {
                    "single": single,
                    "single_1thread": single1,
                    "multi": multi,
                    "throughput_ratio": round(ratio, 3),
                    "throughput_ratio_vs_1thread": round(ratio1, 3),
                    "step_time_ratio": round(multi["step_s"] / single["step_s"], 3),
                }
            }
        )
    )


if __name__ == "__main__":
    main()
