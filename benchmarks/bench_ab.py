"""Two variants of one config's GRPO step side by side in one process: the config with
``--baseline`` overrides and with ``--variant`` overrides (default: ``policy.cpu_bf16=false``
against ``policy.cpu_bf16=true``, float32 against bf16 on a CPU with native bf16 matrix
instructions).

Both runs are built in-process from the same config and seed, so they draw the same roots. Their
steps alternate (A, B, A, B, ...) so that a machine whose speed drifts (a shared VM) slows both
alike, and the ratio is read from the same minutes. The loss budget's per-term backward is
counted at the rate the config asks for: every run also takes one step numbered
``trainer.budget_every`` (which measures the budget), and the per-step cost reported is the
mean of the plain steps plus that step's extra time divided by ``budget_every``.

    .venv/bin/python benchmarks/bench_ab.py [--config examples/clean_proposed.toml] [--steps 4]
        [--baseline policy.cpu_bf16=false ...] [--variant policy.cpu_bf16=true ...]
        [--set SECTION.KEY=VALUE ...]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = ("rollout", "reward_engine", "policy", "learner", "budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "clean_proposed.toml"))
    parser.add_argument("--steps", type=int, default=4, help="timed plain steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first, per variant")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override of the baseline only (repeatable; default policy.cpu_bf16=false)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override of the variant only (repeatable; default policy.cpu_bf16=true)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override of both (repeatable), as `chessrl run --set`",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    defaults = not args.baseline and not args.variant
    baseline = ["policy.cpu_bf16=false"] if defaults else args.baseline
    variant = ["policy.cpu_bf16=true"] if defaults else args.variant

    import torch

    from chessrl.config import load_config
    from chessrl.run import build_run
    from chessrl.step import grpo_step

    common = list(args.overrides) + ["logging.wandb=disabled", "trainer.eval_every=0"]
    cfgs = {"baseline": load_config(args.config, common + baseline)}
    cfgs["variant"] = load_config(args.config, common + variant)
    every = cfgs["baseline"].trainer.budget_every
    # the plain steps' numbers skip multiples of budget_every, which would measure the budget
    plain = list(
        itertools.islice(
            (s for s in itertools.count(1) if not every or s % every), args.warmup + args.steps
        )
    )
    rows: dict[str, list[dict]] = {k: [] for k in cfgs}
    budget_rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ab-") as tmp:
        runs = {k: build_run(c, Path(tmp) / k, log=lambda line: None) for k, c in cfgs.items()}
        try:
            for i, step in enumerate(plain):
                for k, run in runs.items():
                    m = grpo_step(run, step)
                    if i >= args.warmup:
                        rows[k].append(m)
                    print(f"{k:<9} step {step}: {m['time/step']:.2f} s", flush=True)
            if every:
                for k, run in runs.items():
                    budget_rows[k] = grpo_step(run, every)
                    print(
                        f"{k:<9} step {every} (budget): {budget_rows[k]['time/step']:.2f} s",
                        flush=True,
                    )
        finally:
            for run in runs.values():
                run.game.close()

    with open("/proc/loadavg") as fh:
        load = float(fh.read().split()[0])
    out: dict[str, dict] = {}
    for k in cfgs:
        mean = {p: statistics.fmean(r[f"time/{p}"] for r in rows[k]) for p in ("step",) + PARTS}
        extra = budget_rows[k]["time/step"] - mean["step"] if every else 0.0
        out[k] = {
            "step_s": round(mean["step"], 4),
            "budget_step_extra_s": round(extra, 4),
            "step_with_budget_s": round(mean["step"] + (extra / every if every else 0.0), 4),
            "parts_s": {p: round(mean[p], 4) for p in PARTS},
            "step_times_s": [round(r["time/step"], 3) for r in rows[k]],
            "logprob_drift": max(r["rollout/logprob_drift"] for r in rows[k]),
            "ratio_first_epoch": [r.get("train/ratio_first_epoch") for r in rows[k]],
        }
    ro = cfgs["baseline"].rollout
    speedup = out["baseline"]["step_with_budget_s"] / out["variant"]["step_with_budget_s"]
    print(
        f"\nconfig {args.config} (R={ro.roots} G={ro.group_size} T={ro.plies}; torch threads "
        f"{torch.get_num_threads()}); baseline: {' '.join(baseline) or 'the config'}; variant: "
        f"{' '.join(variant) or 'the config'}; {args.steps} plain steps "
        f"each, alternating, after {args.warmup} warm-up; budget every {every or 'never'}"
    )
    print(f"{'':<28}{'baseline':>10}{'variant':>10}{'ratio':>8}")
    for label, key in (("step (budget amortised)", "step_with_budget_s"), ("plain step", "step_s")):
        a, b = out["baseline"][key], out["variant"][key]
        print(f"  {label:<26}{a:9.3f}s{b:9.3f}s{a / b:7.2f}x")
    for p in PARTS:
        a, b = out["baseline"]["parts_s"][p], out["variant"]["parts_s"][p]
        print(f"  {p:<26}{a:9.3f}s{b:9.3f}s{(a / b if b else float('nan')):7.2f}x")
    if every:
        a, b = out["baseline"]["budget_step_extra_s"], out["variant"]["budget_step_extra_s"]
        print(f"  {'budget step, extra':<26}{a:9.3f}s{b:9.3f}s")
    print(
        f"  rollout/logprob_drift max: baseline {out['baseline']['logprob_drift']:.2g}, variant "
        f"{out['variant']['logprob_drift']:.2g}; first-epoch ratios: baseline "
        f"{set(out['baseline']['ratio_first_epoch'])}, variant "
        f"{set(out['variant']['ratio_first_epoch'])}"
    )
    print(f"  load average {load:.2f} on {os.cpu_count()} cores")
    print(
        json.dumps(
            {
                "config": str(args.config),
                "overrides": args.overrides,
                "baseline_overrides": baseline,
                "variant_overrides": variant,
                "roots": ro.roots,
                "group_size": ro.group_size,
                "plies": ro.plies,
                "budget_every": every,
                "steps": args.steps,
                "speedup": round(speedup, 3),
                "load_average": load,
                "cores": os.cpu_count(),
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
