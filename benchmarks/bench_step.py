"""One GRPO step of a config, taken apart: where the wall time goes.

Builds the run in-process (``build_run`` in a temporary run directory), runs ``--warmup``
untimed steps (engine start-up, allocator, first-call costs), then ``--steps`` timed steps
with ``grpo_step``, and prints the mean of the trainer's own ``time/*`` metrics
(docs/metrics.md):

* ``rollout``        the whole rollout (includes the reward engine and the rollout's
                     policy forwards)
* ``reward_engine``  waiting on the game's engine (Stockfish): rewards and teacher-forced moves
* ``policy``         policy forwards: sampling during the rollout + the old/reference
                     log-prob recompute
* ``learner``        loss, backward, optimiser step (includes ``budget``)
* ``budget``         the per-term gradient measurement of the loss budget

``overhead`` is the share of the step outside the engine and the model math
(1 - (engine + policy + learner) / step): env stepping, TensorDict plumbing, advantages,
metrics. Target: <= 20 %. Evaluation and wandb are forced off (``trainer.eval_every=0``,
``logging.wandb=disabled``) so that only the step itself is timed.

    .venv/bin/python benchmarks/bench_step.py [--config examples/clean_proposed.toml] [--steps 3]
                                              [--set rollout.roots=4 ...]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = ("rollout", "reward_engine", "policy", "learner", "budget")
OVERHEAD_TARGET = 0.20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "clean_proposed.toml"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config override (repeatable), as `chessrl run --set`",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    import torch

    from chessrl.config import load_config
    from chessrl.run import build_run
    from chessrl.step import grpo_step

    overrides = list(args.overrides) + ["logging.wandb=disabled", "trainer.eval_every=0"]
    cfg = load_config(args.config, overrides)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_step-") as tmp:
        t_build = time.perf_counter()
        run = build_run(cfg, Path(tmp), log=lambda line: None)
        t_build = time.perf_counter() - t_build
        try:
            for step in range(1, args.warmup + args.steps + 1):
                m = grpo_step(run, step)
                if step > args.warmup:
                    rows.append(m)
                tag = "warm-up" if step <= args.warmup else "timed"
                print(
                    f"step {step} ({tag}): {m['time/step']:.2f} s, "
                    f"{int(m['train/trained_plies'])} trained plies",
                    flush=True,
                )
        finally:
            run.game.close()

    with open("/proc/loadavg") as fh:  # the machine may be shared: say how busy it was
        load = float(fh.read().split()[0])
    mean = {k: statistics.fmean(r[f"time/{k}"] for r in rows) for k in ("step",) + PARTS}
    # The trainer's per-step overhead share, averaged over steps (equal-weight), and the share of
    # the summed times (time-weighted); they differ only when step times differ a lot.
    overhead = statistics.fmean(r["time/overhead_frac"] for r in rows)
    overhead_pooled = max(
        0.0, 1 - (mean["reward_engine"] + mean["policy"] + mean["learner"]) / mean["step"]
    )
    plies = statistics.fmean(r["train/trained_plies"] for r in rows)
    ro = cfg.rollout
    step = mean["step"]

    print(
        f"\nconfig {args.config} ({cfg.env.name}; R={ro.roots} G={ro.group_size} T={ro.plies}; "
        f"device {run.device}; torch threads {torch.get_num_threads()}); build {t_build:.2f} s"
    )
    print(f"mean of {len(rows)} steps after {args.warmup} warm-up:")
    print(f"  {'step':<15}{step:8.3f} s  100.0 %")
    labels = {
        "rollout": "rollout",
        "reward_engine": "  reward engine",
        "policy": "  policy forward",
        "learner": "learner",
        "budget": "  budget",
    }
    for k in PARTS:
        print(f"  {labels[k]:<15}{mean[k]:8.3f} s  {100 * mean[k] / step:5.1f} %")
    print(
        f"  {'overhead':<15}{overhead * step:8.3f} s  {100 * overhead:5.1f} %  (target <= "
        f"{100 * OVERHEAD_TARGET:.0f} %: "
        f"{'met' if overhead <= OVERHEAD_TARGET else 'NOT met'})"
    )
    times = [r["time/step"] for r in rows]
    print(
        f"  step times {', '.join(f'{t:.2f}' for t in times)} s (min {min(times):.2f}, max "
        f"{max(times):.2f}); "
        f"load average {load:.2f} on {os.cpu_count()} cores"
    )
    print(f"  trained plies / step {plies:.0f}; {plies / step:.1f} trained plies/s")
    searches = statistics.fmean(r.get("rollout/reward_searches", 0) for r in rows)
    hit = statistics.fmean(r.get("rollout/reward_cache_hit_rate", 0) for r in rows)
    print(f"  reward searches / step {searches:.0f}; dedup + cache hit rate {hit:.1%} of lookups")
    print(
        "  (rollout includes reward engine and the rollout's policy forwards; policy also "
        "counts the "
        "old/reference recompute; learner includes budget)"
    )

    print(
        json.dumps(
            {
                "config": str(args.config),
                "overrides": args.overrides,
                "game": cfg.env.name,
                "device": str(run.device),
                "roots": ro.roots,
                "group_size": ro.group_size,
                "plies": ro.plies,
                "steps": len(rows),
                "warmup": args.warmup,
                "torch_threads": torch.get_num_threads(),
                "build_s": round(t_build, 3),
                "step_s": round(step, 4),
                "parts_s": {k: round(mean[k], 4) for k in PARTS},
                "shares": {k: round(mean[k] / step, 4) for k in PARTS},
                "overhead_frac": round(overhead, 4),
                "overhead_frac_pooled": round(overhead_pooled, 4),
                "overhead_target_met": overhead <= OVERHEAD_TARGET,
                "step_times_s": [round(t, 4) for t in times],
                "load_average": load,
                "cores": os.cpu_count(),
                "trained_plies_per_step": plies,
                "trained_plies_per_s": round(plies / step, 2),
                "reward_searches_per_step": round(searches, 1),
                "reward_hit_rate": round(hit, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
