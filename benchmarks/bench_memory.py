"""Peak resident memory of a short training run vs the bare policy.

Each measurement runs in a fresh Python subprocess (this script re-invoked with ``--child``),
which reports its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's
high-water mark: every allocator, torch's included, not just Python objects):

* ``baseline``  import torch + chessrl, build the config's game object and its policy, nothing else
* ``run``       ``chessrl.trainer.train`` of the config for ``--steps`` steps (default 2) in a
                temporary run directory: env, rollouts, old/reference policies, optimiser state,
                loss budget, metrics, the final checkpoint (wandb disabled, no evaluation)

The run's Stockfish processes are separate processes and not in its RSS (each holds its
``[env] hash_mb`` table, 16 MiB by default, plus the engine itself). Their ``RUSAGE_CHILDREN``
peak is no use here: on Linux a child inherits its parent's high-water mark across fork+exec.

    .venv/bin/python benchmarks/bench_memory.py [--config examples/clean_proposed.toml] [--steps 2]

The last line is JSON (MiB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OVERRIDES = ["logging.wandb=disabled", "trainer.eval_every=0", "logging.progress=false"]


def _mib(kib: int) -> float:
    return kib / 1024.0  # Linux reports ru_maxrss in KiB


def child(mode: str, config: str, steps: int, overrides: list[str]) -> None:
    """Runs inside the measurement subprocess; prints one JSON line."""
    import torch  # noqa: F401 - part of what the baseline pays for

    from chessrl.config import load_config
    from chessrl.policy import build_policy
    from chessrl.trainer import make_game, train

    cfg = load_config(config, overrides + OVERRIDES)
    n_params = None
    if mode == "baseline":
        game = make_game(cfg, cfg.seed)  # constructing the game starts no engine
        policy = build_policy(cfg.policy, game)
        n_params = sum(p.numel() for p in policy.parameters())
        game.close()
    else:
        with tempfile.TemporaryDirectory(prefix="bench_memory-") as tmp:
            train(cfg, Path(tmp) / "run", max_steps=steps, progress=False, echo=lambda line: None)
    print(
        json.dumps(
            {
                "mode": mode,
                "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "params": n_params,
            }
        )
    )


def measure(mode: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--config",
        args.config,
        "--steps",
        str(args.steps),
    ]
    for o in args.overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"bench_memory: the {mode} measurement failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "clean_proposed.toml"))
    parser.add_argument("--steps", type=int, default=2, help="training steps of the measured run")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    parser.add_argument("--child", choices=("baseline", "run"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.config, args.steps, args.overrides)
        return

    base = measure("baseline", args)
    run = measure("run", args)
    base_mib, run_mib = _mib(base["self_kib"]), _mib(run["self_kib"])
    ratio = run_mib / base_mib
    print(
        f"config {args.config}, {args.steps}-step run vs policy only "
        f"({base['params']:,} parameters)"
    )
    print(f"{'':<32}{'peak RSS':>12}")
    print(f"{'baseline (torch+chessrl+policy)':<32}{base_mib:8.0f} MiB")
    print(f"{'training run':<32}{run_mib:8.0f} MiB")
    print(f"{'ratio run / baseline':<32}{ratio:8.2f}x")
    print(f"{'extra for training':<32}{run_mib - base_mib:8.0f} MiB")
    print("(Stockfish engines are separate processes, not in the run's RSS)")
    print(
        json.dumps(
            {
                "config": args.config,
                "steps": args.steps,
                "policy_params": base["params"],
                "baseline_mib": round(base_mib, 1),
                "run_mib": round(run_mib, 1),
                "ratio": round(ratio, 3),
                "extra_mib": round(run_mib - base_mib, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
