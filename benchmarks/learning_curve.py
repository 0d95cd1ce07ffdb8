"""Learning curve of a GRPO run: evaluation scores with Wilson 95% CIs against training time.

Trains a config in-process (default ``examples/tictactoe.toml``: from random initialisation to
non-losing play against the perfect player), evaluating every ``--eval-every`` steps with
``--eval-games`` games per opponent, the initial policy included (step 0), and prints one row
per evaluation: the step, the wall time spent so far (training steps + evaluations, from the
trainer's ``time/step`` and ``time/eval``), and per opponent the score and the non-losing share,
each with its Wilson 95% interval. The last line is JSON.

    .venv/bin/python benchmarks/learning_curve.py    # tic-tac-toe, ~9 min on 2 cores
    .venv/bin/python benchmarks/learning_curve.py --steps 200 --eval-every 50
    .venv/bin/python benchmarks/learning_curve.py --config examples/connect_four.toml
    .venv/bin/python benchmarks/learning_curve.py --run-dir RUN_DIR  # the curve of a finished run

The baseline is the run's own step-0 evaluation: the same opponents and openings, the policy
before any update. ``--target`` (default 0.95 non-losing against ``--opponent perfect``) names
the first evaluation whose point estimate reaches it and the time it took.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from chessrl.stats import wilson

REPO = Path(__file__).resolve().parent.parent


def curve(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Rows with ``eval/`` keys -> [{step, seconds, <opp>: {...}}], and the opponents seen."""
    elapsed, points, opponents = 0.0, [], []
    for row in rows:
        elapsed += float(row.get("time/step", 0.0)) + float(row.get("time/eval", 0.0))
        opps = sorted(
            {k.split("/")[1] for k in row if k.startswith("eval/") and k.endswith("/score")}
        )
        if not opps:
            continue
        point = {"step": int(row["step"]), "seconds": round(elapsed, 1)}
        for opp in opps:
            p = f"eval/{opp}/"
            e = {
                k: row.get(p + k)
                for k in (
                    "games",
                    "score",
                    "score_lo",
                    "score_hi",
                    "non_losing",
                    "non_losing_lo",
                    "non_losing_hi",
                )
            }
            if e["non_losing"] is None and all(
                row.get(p + k) is not None for k in ("wins", "draws", "games")
            ):
                kept = row[p + "wins"] + row[p + "draws"]  # runs logged before non_losing existed
                e["non_losing"] = kept / row[p + "games"]
                e["non_losing_lo"], e["non_losing_hi"] = wilson(kept, int(row[p + "games"]))
            point[opp] = e
            if opp not in opponents:
                opponents.append(opp)
        points.append(point)
    return points, opponents


BENCH_KEYS = ("agreement/top1", "agreement/top3", "mate1/success", "material/success", "ladder/elo")


def bench_curve(rows: list[dict]) -> list[dict]:
    """A game's held-out benchmark (``Game.benchmark``) at each evaluation: [{step, seconds,
    <metric>: [value, lo, hi]}] for the metrics of BENCH_KEYS that the run logged."""
    elapsed, points = 0.0, []
    for row in rows:
        elapsed += float(row.get("time/step", 0.0)) + float(row.get("time/eval", 0.0))
        found = {
            k: [row[f"eval/{k}"], row[f"eval/{k}_lo"], row[f"eval/{k}_hi"]]
            for k in BENCH_KEYS
            if all(f"eval/{k}{s}" in row for s in ("", "_lo", "_hi"))
        }
        if found:
            points.append({"step": int(row["step"]), "seconds": round(elapsed, 1), **found})
    return points


def _cell(e: dict | None, key: str) -> str:
    if not e or e.get(key) is None:
        return "—"
    return f"{e[key]:.3f} [{e[key + '_lo']:.3f}, {e[key + '_hi']:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "examples" / "tictactoe.toml"))
    parser.add_argument(
        "--run-dir", help="print the curve of this finished run instead of training"
    )
    parser.add_argument("--out", help="run directory for the training (default: a temporary one)")
    parser.add_argument("--steps", type=int, help="training steps (default: the config's)")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--eval-games", type=int, default=200)
    parser.add_argument("--opponent", default="perfect", help="opponent the --target refers to")
    parser.add_argument(
        "--target", type=float, default=0.95, help="non-losing share to report the time to"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )
    args = parser.parse_args()

    from chessrl.metrics import read_metrics

    if args.run_dir:
        run_dir, source = Path(args.run_dir), f"run {args.run_dir}"
        rows = read_metrics(run_dir / "metrics.jsonl")
    else:
        from chessrl.config import load_config
        from chessrl.trainer import train

        over = [
            f"trainer.eval_every={args.eval_every}",
            f"trainer.eval_games={args.eval_games}",
            "trainer.eval_initial=true",
            "logging.wandb=disabled",
            "logging.progress=false",
            *args.overrides,
        ]
        if args.steps:
            over.append(f"trainer.steps={args.steps}")
        cfg = load_config(args.config, over)
        source = f"{Path(args.config).name} with {' '.join(over)}"
        print(f"training {source}", flush=True)
        with tempfile.TemporaryDirectory(prefix="learning_curve-") as tmp:
            run_dir = Path(args.out) if args.out else Path(tmp) / "run"
            train(cfg, run_dir, progress=False, echo=lambda line: None)
            rows = read_metrics(run_dir / "metrics.jsonl")

    points, opponents = curve(rows)
    if not points:
        print(f"no evaluations in {source}: set trainer.eval_every", file=sys.stderr)
        return 1
    head = f"{'step':>6} {'minutes':>8}"
    for opp in opponents:
        head += f"  {opp + ' score [95% CI]':<28} {opp + ' non-losing [95% CI]':<30}"
    print(head)
    for pt in points:
        line = f"{pt['step']:>6} {pt['seconds'] / 60:>8.1f}"
        for opp in opponents:
            line += f"  {_cell(pt.get(opp), 'score'):<28} {_cell(pt.get(opp), 'non_losing'):<30}"
        print(line)
    bench = bench_curve(rows)
    if bench:
        keys = [k for k in BENCH_KEYS if k in bench[0]]
        print("\nheld-out benchmark (value [95% CI]):")
        print(f"{'step':>6} {'minutes':>8}  " + "  ".join(f"{k:<24}" for k in keys))
        for pt in bench:
            cells = [
                (
                    f"{pt[k][0]:+.0f} [{pt[k][1]:+.0f}, {pt[k][2]:+.0f}]"
                    if k == "ladder/elo"
                    else f"{pt[k][0]:.3f} [{pt[k][1]:.3f}, {pt[k][2]:.3f}]"
                )
                if k in pt
                else "—"
                for k in keys
            ]
            print(
                f"{pt['step']:>6} {pt['seconds'] / 60:>8.1f}  "
                + "  ".join(f"{c:<24}" for c in cells)
            )
    reached = next(
        (
            pt
            for pt in points
            if (pt.get(args.opponent) or {}).get("non_losing") is not None
            and pt[args.opponent]["non_losing"] >= args.target
        ),
        None,
    )
    if reached:
        print(
            f"first evaluation with non-losing >= {args.target:.0%} against {args.opponent}: "
            f"step {reached['step']}, "
            f"{reached['seconds'] / 60:.1f} minutes of training and evaluation"
        )
    else:
        print(f"no evaluation reached non-losing >= {args.target:.0%} against {args.opponent}")
    print(
        json.dumps(
            {
                "source": source,
                "points": points,
                "benchmark": bench,
                "target": {
                    "opponent": args.opponent,
                    "non_losing": args.target,
                    "step": reached["step"] if reached else None,
                    "seconds": reached["seconds"] if reached else None,
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
