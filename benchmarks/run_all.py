"""Run every benchmark, one after the other, and print one table (``make bench``).

Each script runs as its own subprocess (so one cannot warm or pollute another) and ends with
a line of JSON, which this script reads:

* bench_env.py     env plies/s: our BoardGameEnv vs PettingZoo chess_v6 and bare python-chess
* bench_reward.py  Stockfish pool vs one engine, and the reward cache's hit rate in a rollout
* bench_limit.py   the reward path vs the raw-UCI limit of the machine; reward settings' speed
                   and quality
* bench_step.py    one clean_proposed.toml GRPO step: time and framework-overhead share
* bench_ab.py      that step in float32 and with policy.cpu_bf16 side by side, budget amortised
* bench_ddp.py     2 torchrun processes vs 1 (tic-tac-toe, gloo), positions/s
* bench_memory.py  peak RSS of a 2-step clean_proposed.toml run vs the policy alone

    .venv/bin/python benchmarks/run_all.py [--markdown] [--quick] [--only step,ddp]
        [--json-out FILE]

``--markdown`` prints the table (and the machine) as markdown for docs/performance.md;
``--quick`` passes smaller sizes to every script (a smoke test, not figures to publish).
The last line is JSON: the machine and every script's own JSON (or its error).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# name -> (script, default args, --quick args)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "env": ("bench_env.py", [], ["--seconds", "1.5"]),
    "reward": ("bench_reward.py", [], ["--positions", "32", "--roots", "2", "--plies", "8"]),
    "limit": (
        "bench_limit.py",
        ["--quality"],
        ["--positions", "60", "--quality", "--quality-positions", "40"],
    ),
    "step": ("bench_step.py", [], ["--steps", "1", "--warmup", "1"]),
    "ab": ("bench_ab.py", [], ["--steps", "1", "--warmup", "0"]),
    "ddp": ("bench_ddp.py", [], ["--steps", "4", "--skip", "1", "--roots", "8"]),
    "memory": ("bench_memory.py", [], ["--steps", "1"]),
}

# targets (docs/performance.md)
ENV_VS_PZ, ENV_VS_PYCHESS, POOL_SPEEDUP, OVERHEAD, STEP_S = 10.0, 0.5, 1.8, 0.20, 4.0
LIMIT_FRACTION = 0.90


def load_average() -> float | None:
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError):
        return None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        torch_version, gpu = "not installed", None
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 2**20, 1)  # MemTotal, GiB
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "gpu": gpu,
        "torch": torch_version,
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def run_bench(name: str, quick: bool, timeout: float, verbose: bool) -> dict:
    """Run one script; its JSON, or {"error": ...}. Adds "seconds"."""
    script, args, quick_args = BENCHES[name]
    cmd = [sys.executable, str(HERE / script)] + (quick_args if quick else args)
    print(
        f"running {script} {' '.join(quick_args if quick else args)}".rstrip() + " ...",
        file=sys.stderr,
        flush=True,
    )
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "seconds": timeout}
    seconds = round(time.perf_counter() - t0, 1)
    if verbose:
        sys.stderr.write(proc.stdout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:]) or "no output"
        print(f"  {script} failed (exit {proc.returncode}): {tail}", file=sys.stderr)
        return {"error": f"exit {proc.returncode}: {tail[-300:]}", "seconds": seconds}
    try:
        out = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"last line is not JSON: {lines[-1][:200]}", "seconds": seconds}
    print(f"  done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return out | {"seconds": seconds}


def _short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def _env_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    p, q = r["plies_per_s"], r["ratios"]
    rows.append(
        (
            f"env: BoardGameEnv vs PettingZoo chess_v6, random play, batch {r['batch']}",
            f"{p['board_game_env']:,} vs {p['pettingzoo']:,} plies/s",
            f"{q['board_game_env_vs_pettingzoo']:.1f}x",
            f">= {ENV_VS_PZ:.0f}x",
            _ok(q["board_game_env_vs_pettingzoo"] >= ENV_VS_PZ),
        )
    )
    rows.append(
        (
            "env: BoardGameEnv vs bare python-chess (1 board, no observation)",
            f"{p['board_game_env']:,} vs {p['python_chess']:,} plies/s",
            f"{q['board_game_env_vs_python_chess']:.2f}x",
            f">= {ENV_VS_PYCHESS}x",
            _ok(q["board_game_env_vs_python_chess"] >= ENV_VS_PYCHESS),
        )
    )
    return rows


def _reward_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    e = r["evals_per_s"]
    rows.append(
        (
            f"reward: {r['engines']}-engine Stockfish pool vs 1 engine, depth {r['depth']}",
            f"{e['pool']:.1f} vs {e['single']:.1f} evals/s",
            f"{r['speedup']:.2f}x",
            f">= {POOL_SPEEDUP}x",
            _ok(r["speedup"] >= POOL_SPEEDUP),
        )
    )
    ro = r["rollout"]
    rows.append(
        (
            "reward: cache hit rate, random-play rollout",
            f"{ro['hit_rate']:.1%} ({ro['hits']:,} hits, {ro['misses']:,} misses)",
            "",
            "",
            "",
        )
    )
    return rows


def _limit_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    rows.append(
        (
            f"limit: {r['engines']} raw-UCI Stockfish processes back to back, {r['go']}",
            f"{r['limit']:.0f} evals/s ({r['single']:.0f} one engine)",
            f"{r['limit_scaling']:.2f} of linear",
            "",
            "",
        )
    )
    rows.append(
        (
            "limit: reward pool, warm hash (fresh_search = false)",
            f"{r['pool_warm']:.0f} evals/s ({r['warm_vs_one_engine']:.2f}x one engine)",
            f"{r['pool_warm_fraction_of_limit']:.2f} of limit",
            f">= {LIMIT_FRACTION:.2f}",
            _ok(r["pool_warm_fraction_of_limit"] >= LIMIT_FRACTION),
        )
    )
    rows.append(
        (
            "limit: reward pool, fresh searches (default; vs the limit with ucinewgame)",
            f"{r['pool']:.0f} evals/s ({r['pool_vs_one_engine']:.2f}x one engine)",
            f"{r['pool_fraction_of_fresh_limit']:.2f} of that limit",
            f">= {LIMIT_FRACTION:.2f}",
            _ok(r["pool_fraction_of_fresh_limit"] >= LIMIT_FRACTION),
        )
    )
    rows.append(
        (
            "limit: the previous python-chess driver (same engines, fresh searches)",
            f"{r['python_chess']:.0f} evals/s",
            f"pool {r['pool'] / r['python_chess']:.2f}x it" if r["python_chess"] else "",
            "",
            "",
        )
    )
    for name, q in (r.get("quality") or {}).items():
        rows.append(
            (
                f"reward setting {name}",
                f"{q['evals_per_s']:,.0f} evals/s fresh, "
                f"{q.get('evals_per_s_warm', float('nan')):,.0f} warm",
                f"Spearman {q['spearman_vs_depth12']:.3f} vs depth 12",
                "",
                "",
            )
        )
    return rows


def _step_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    sh = r["shares"]
    rows.append(
        (
            f"step: clean_proposed.toml, R={r['roots']} G={r['group_size']} T={r['plies']} "
            f"(mean of {r['steps']})",
            f"{r['step_s']:.1f} s (rollout {sh['rollout']:.0%}, engine {sh['reward_engine']:.0%}, "
            f"policy {sh['policy']:.0%}, learner {sh['learner']:.0%}, budget {sh['budget']:.0%})",
            "",
            f"<= ~{STEP_S:.0f} s",
            _ok(r["step_s"] <= STEP_S),
        )
    )
    if "reward_searches_per_step" in r:
        rows.append(
            (
                "step: reward searches per step (after dedup and cache)",
                f"{r['reward_searches_per_step']:.0f} "
                f"({r['reward_hit_rate']:.1%} of lookups answered by a repeat or the cache)",
                "",
                "",
                "",
            )
        )
    rows.append(
        (
            "step: framework overhead (outside engine and model math)",
            f"{r['overhead_frac']:.1%} of the step",
            "",
            f"<= {OVERHEAD:.0%}",
            _ok(r["overhead_frac"] <= OVERHEAD),
        )
    )
    return rows


def _ab_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    a, b = r["baseline"], r["variant"]
    return [
        (
            f"step: clean_proposed.toml R={r['roots']}, {' '.join(r['baseline_overrides'])} vs "
            f"{' '.join(r['variant_overrides'])}, alternating (budget every "
            f"{r['budget_every']} included)",
            f"{a['step_with_budget_s']:.2f} s vs {b['step_with_budget_s']:.2f} s",
            f"{r['speedup']:.2f}x",
            f"<= {STEP_S:.0f} s",
            _ok(b["step_with_budget_s"] <= STEP_S),
        )
    ]


def _ddp_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    if r.get("ddp") is None:
        rows.append(
            (
                f"DDP: {r.get('procs', 2)} processes vs 1",
                _short(f"not available: {r.get('reason')}"),
                "",
                "",
                "",
            )
        )
    else:
        d = r["ddp"]
        rows.append(
            (
                f"DDP: {d['multi']['procs']} torchrun processes vs 1 (all cores), "
                "tic-tac-toe, gloo",
                f"{d['multi']['positions_per_s']:,.0f} vs "
                f"{d['single']['positions_per_s']:,.0f} positions/s",
                f"{d['throughput_ratio']:.2f}x",
                "",
                "",
            )
        )
        if "single_1thread" in d:
            rows.append(
                (
                    f"DDP: {d['multi']['procs']} processes vs 1 process at 1 thread "
                    "(per-rank scaling)",
                    f"{d['multi']['positions_per_s']:,.0f} vs "
                    f"{d['single_1thread']['positions_per_s']:,.0f} positions/s",
                    f"{d['throughput_ratio_vs_1thread']:.2f}x",
                    f"ideal {d['multi']['procs']}x",
                    "",
                )
            )
    return rows


def _memory_rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    rows.append(
        (
            f"memory: peak RSS, {r['steps']}-step clean_proposed.toml run vs policy only",
            f"{r['run_mib']:,.0f} vs {r['baseline_mib']:,.0f} MiB",
            f"{r['ratio']:.2f}x",
            "",
            "",
        )
    )
    return rows


def table_rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    """(measurement, result, ratio, target, met) rows from the scripts' JSON, in BENCHES order."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, rows_of in (
        ("env", _env_rows),
        ("reward", _reward_rows),
        ("limit", _limit_rows),
        ("step", _step_rows),
        ("ab", _ab_rows),
        ("ddp", _ddp_rows),
        ("memory", _memory_rows),
    ):
        r = res.get(name)
        if r is None:
            continue
        if "error" in r:
            rows.append((name, _short(f"failed: {r['error']}"), "", "", ""))
        else:
            rows.extend(rows_of(r))
    return rows


HEADER = ("measurement", "result", "ratio", "target", "met")


def render_text(rows: list[tuple], m: dict) -> str:
    widths = [max(len(str(r[i])) for r in [HEADER] + rows) for i in range(len(HEADER))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, "
        f"Python {m['python']}; {m['date']}",
        f"1-minute load average {m['load_average_start']} before, {m['load_average_end']} after",
        "",
        fmt.format(*HEADER),
        fmt.format(*("-" * w for w in widths)),
    ]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: list[tuple], m: dict, command: str) -> str:
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, "
        f"{('GPU ' + m['gpu']) if m['gpu'] else 'no GPU'}; torch {m['torch']}, "
        f"Python {m['python']}. Date: {m['date']}. Command: `{command}`. 1-minute load average "
        f"{m['load_average_start']} before the run, {m['load_average_end']} after"
        + (
            " (above the core count: other work competed for the CPU)."
            if max(m["load_average_start"] or 0, m["load_average_end"] or 0) > (m["cores"] or 1)
            else "."
        ),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere (smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per script")
    parser.add_argument(
        "--verbose", action="store_true", help="echo each script's own output to stderr"
    )
    parser.add_argument("--json-out", help="also write the combined JSON to this file")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")

    m = machine()
    results = {name: run_bench(name, args.quick, args.timeout, args.verbose) for name in names}
    m["load_average_end"] = load_average()
    rows = table_rows(results)
    command = (
        "python benchmarks/run_all.py"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else "")
    )
    print()
    print(render_markdown(rows, m, command) if args.markdown else render_text(rows, m))
    combined = {"machine": m, "quick": args.quick, "results": results}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(combined, indent=2) + "\n")
    print(json.dumps(combined))


if __name__ == "__main__":
    main()
