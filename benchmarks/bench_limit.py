"""The reward path against the physical limit of the machine, side by side in one process.

The limit: one Stockfish process per engine slot (``--engines``, default: one per core),
each handed its share of the positions as one pipelined script of ``position``/``go``
commands over a raw pipe and left to search back to back; Python only counts ``bestmove``
lines. Same positions, same limit (depth / nodes), same hash, ``Threads = 1``.

Measured against it, on the same positions:

* ``pool``        the reward path: ``StockfishPool.values`` as the trainer calls it, cache off,
                  every search from a cleared hash (``fresh = true``, the default);
* ``pool_warm``   the same with ``fresh = false`` (hash kept between searches);
* ``limit_fresh`` the limit with ``ucinewgame`` before every search (what freshness costs);
* ``python_chess`` the previous driver: python-chess's ``SimpleEngine.analyse`` from one
                  thread per engine, ``ucinewgame`` per search (the before figure);
* ``single``      one engine, raw and back to back: the per-core rate.

Then the strength settings (``--quality``): evaluations/s of a depth-limited, a node-limited
and a static (NNUE ``eval``) reward, each with the Spearman rank agreement of its values with
depth-12 values on the same held-out positions.

    .venv/bin/python benchmarks/bench_limit.py [--positions 400] [--depth 8] [--engines N]
        [--quality] [--scaling]

``--scaling`` adds the raw limit at 1, 2, 4, ... engines with the NNUE and with the classical
evaluation, and each engine's private memory: where the limit falls short of linear, it says
whether the per-process network copies are the cause.

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

import chess
import chess.engine
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reward import distinct_positions, evals_per_second  # noqa: E402  (same directory)

STOCKFISH = "/usr/games/stockfish"


def _engine(hash_mb: int, options: dict[str, str] | None = None) -> subprocess.Popen:
    p = subprocess.Popen(
        [STOCKFISH],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    extra = "".join(f"setoption name {k} value {v}\n" for k, v in (options or {}).items())
    p.stdin.write(
        (
            f"uci\nsetoption name Threads value 1\nsetoption name Hash value {hash_mb}\n"
            f"{extra}isready\n"
        ).encode()
    )
    buf = b""
    while b"readyok" not in buf:
        buf += os.read(p.stdout.fileno(), 1 << 16)
    return p


def private_mib(pid: int) -> float:
    """A process's private resident memory (MiB): for Stockfish its hash plus its own copy of
    the NNUE network, which no two processes share (Stockfish 15.1); nan where /proc has no
    ``smaps_rollup``."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return float("nan")
    kib = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Private_"))
    return kib / 1024


def raw_limit(
    boards: list[chess.Board],
    engines: int,
    go: str,
    hash_mb: int,
    fresh: bool,
    options: dict[str, str] | None = None,
    memory: list[float] | None = None,
) -> float:
    """Searches per second with ``engines`` processes fed pipelined command scripts;
    ``options``: extra UCI options; ``memory``: gets each engine's private MiB after its
    searches."""
    procs = [_engine(hash_mb, options) for _ in range(engines)]
    shares = [boards[i::engines] for i in range(engines)]
    prefix = "ucinewgame\n" if fresh else ""
    scripts = [
        "".join(f"{prefix}position fen {b.fen()}\n{go}\n" for b in share).encode()
        for share in shares
    ]
    sel = selectors.DefaultSelector()
    left = {}
    for p, share in zip(procs, shares):
        sel.register(p.stdout.fileno(), selectors.EVENT_READ, p)
        left[p.pid] = len(share)
    t0 = time.perf_counter()
    # a writer thread per engine: a long script can exceed the pipe buffer
    writers = [threading.Thread(target=p.stdin.write, args=(s,)) for p, s in zip(procs, scripts)]
    for w in writers:
        w.start()
    tails = {p.pid: b"" for p in procs}
    while any(left.values()):
        for key, _ in sel.select():
            p = key.data
            chunk = tails[p.pid] + os.read(key.fd, 1 << 16)
            cut = chunk.rfind(b"\n") + 1
            left[p.pid] -= chunk[:cut].count(b"\nbestmove") + chunk[:cut].startswith(b"bestmove")
            tails[p.pid] = chunk[cut:]
    wall = time.perf_counter() - t0
    for w in writers:
        w.join()
    if memory is not None:
        memory.extend(private_mib(p.pid) for p in procs)
    for p in procs:
        p.stdin.write(b"quit\n")
        p.wait()
    sel.close()
    return len(boards) / wall


def pool_rate(
    boards: list[chess.Board], engines: int, hash_mb: int, fresh: bool, **limit
) -> tuple[float, float, float]:
    """(evaluations/s, searches in flight, driver CPU µs per evaluation) of the reward path,
    cache off."""
    driver: dict = {}
    rate, overlap = evals_per_second(
        engines, boards, limit.pop("depth", None), driver, hash_mb=hash_mb, fresh=fresh, **limit
    )
    return rate, overlap, driver["cpu_us"]


def python_chess_rate(boards: list[chess.Board], engines: int, hash_mb: int, depth: int) -> float:
    """The previous driver: python-chess SimpleEngine, one thread per engine, ucinewgame per
    search."""
    import concurrent.futures as cf

    engs = [chess.engine.SimpleEngine.popen_uci(STOCKFISH) for _ in range(engines)]
    for e in engs:
        e.configure({"Threads": 1, "Hash": hash_mb})
    limit = chess.engine.Limit(depth=depth)

    def work(k: int) -> None:
        for b in boards[k::engines]:
            engs[k].analyse(b, limit, game=object(), info=chess.engine.INFO_SCORE)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(engines) as ex:
        list(ex.map(work, range(engines)))
    wall = time.perf_counter() - t0
    for e in engs:
        e.quit()
    return len(boards) / wall


def scaling(boards: list[chess.Board], engines: int, go: str, hash_mb: int) -> dict:
    """The raw limit at 1, 2, 4, ... ``engines`` processes, with Stockfish's NNUE evaluation
    (the default) and with its classical evaluation (``Use NNUE = false``, Stockfish 15.1),
    each with the engines' private memory. Each count gets ``per * k`` positions so every
    row takes about as long. If the classical rows scale closer to linear than the NNUE rows,
    the limit's shortfall is the per-process network copies competing for the caches and
    memory bandwidth, not the cores (docs/performance.md)."""
    counts = sorted({k for k in (1, 2, 4, 8, 12, 16, 24, 32) if k < engines} | {engines})
    per = max(40, len(boards) // max(1, engines))
    out: dict = {}
    for label, options in (("nnue", {}), ("classical", {"Use NNUE": "false"})):
        rows = []
        one = None
        for k in counts:
            mem: list[float] = []
            rate = raw_limit(boards[: per * k], k, go, hash_mb, False, options, mem)
            one = one or rate
            rows.append(
                {
                    "engines": k,
                    "evals_per_s": round(rate, 1),
                    "vs_one_engine": round(rate / one, 2),
                    "of_linear": round(rate / one / k, 3),
                    "private_mib_per_engine": round(float(np.mean(mem)), 1),
                }
            )
        out[label] = rows
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def quality(boards: list[chess.Board], engines: int, hash_mb: int) -> dict:
    from chessrl.envs.chess.stockfish import StockfishPool

    def values(fresh: bool = True, **limit) -> tuple[np.ndarray, float]:
        pool = StockfishPool(
            STOCKFISH, engines=engines, hash_mb=hash_mb, cache_size=0, fresh=fresh, **limit
        )
        try:
            pool.start_all()
            t0 = time.perf_counter()
            v = pool.values(boards)
            return v, len(boards) / (time.perf_counter() - t0)
        finally:
            pool.close()

    ref, ref_rate = values(depth=12)
    rows = {"depth12": {"evals_per_s": round(ref_rate, 1), "spearman_vs_depth12": 1.0}}
    for name, limit in [
        ("static", {"static": True}),
        ("depth1", {"depth": 1}),
        ("depth4", {"depth": 4}),
        ("depth6", {"depth": 6}),
        ("depth8", {"depth": 8}),
        ("nodes100", {"nodes": 100}),
        ("nodes1000", {"nodes": 1000}),
        ("nodes5000", {"nodes": 5000}),
    ]:
        v, rate = values(**limit)
        _, warm = values(fresh=False, **limit)
        rows[name] = {
            "evals_per_s": round(rate, 1),
            "evals_per_s_warm": round(warm, 1),
            "spearman_vs_depth12": round(spearman(v, ref), 3),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=400)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=0, help="pin by nodes instead of depth")
    parser.add_argument("--engines", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--hash", type=int, default=16)
    parser.add_argument("--quality", action="store_true", help="also the strength-settings table")
    parser.add_argument("--quality-positions", type=int, default=300)
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="also the raw limit at 1, 2, 4, ... engines, NNUE and classical evaluation",
    )
    args = parser.parse_args()
    boards = distinct_positions(args.positions, np.random.default_rng(7))
    go = f"go nodes {args.nodes}" if args.nodes else f"go depth {args.depth}"
    limit = {"nodes": args.nodes} if args.nodes else {"depth": args.depth}
    n = args.engines
    single = raw_limit(boards[: max(40, len(boards) // 4)], 1, go, args.hash, fresh=False)
    memory: list[float] = []
    lim = raw_limit(boards, n, go, args.hash, fresh=False, memory=memory)
    lim_fresh = raw_limit(boards, n, go, args.hash, fresh=True)
    pool, overlap, cpu_fresh = pool_rate(boards, n, args.hash, True, **limit)
    warm, _, cpu_warm = pool_rate(boards, n, args.hash, False, **limit)
    old = python_chess_rate(boards, n, args.hash, args.depth) if not args.nodes else float("nan")
    with open("/proc/loadavg") as fh:
        load = float(fh.read().split()[0])
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.2f}; {len(boards)} positions, {go}, "
        f"hash {args.hash} MiB, {n} engines"
    )
    rows = [
        ("single engine, raw", single),
        (f"limit: {n} raw engines", lim),
        ("limit with ucinewgame", lim_fresh),
        ("pool, fresh (default)", pool),
        ("pool, warm hash", warm),
        ("python-chess driver (before)", old),
    ]
    for name, rate in rows:
        print(
            f"  {name:30s} {rate:8.1f} evals/s  {rate / lim:6.2f} of limit  "
            f"{rate / single:5.2f}x one engine"
        )
    print(
        f"  pool searches in flight: {overlap:.2f}; limit scaling {lim / single / n:.2f} of linear;"
        f" driver CPU per search {cpu_fresh:.0f} µs fresh, {cpu_warm:.0f} µs warm;"
        f" {float(np.mean(memory)):.0f} MiB private memory per engine"
    )
    out = {
        "cores": os.cpu_count(),
        "load_average": load,
        "engines": n,
        "go": go,
        "positions": len(boards),
        "single": round(single, 1),
        "limit": round(lim, 1),
        "limit_fresh": round(lim_fresh, 1),
        "pool": round(pool, 1),
        "pool_warm": round(warm, 1),
        "python_chess": round(old, 1),
        "pool_fraction_of_limit": round(pool / lim, 3),
        "pool_warm_fraction_of_limit": round(warm / lim, 3),
        "pool_fraction_of_fresh_limit": round(pool / lim_fresh, 3),
        "pool_vs_one_engine": round(pool / single, 2),
        "warm_vs_one_engine": round(warm / single, 2),
        "limit_scaling": round(lim / single / n, 3),
        "driver_cpu_us": {"fresh": round(cpu_fresh, 1), "warm": round(cpu_warm, 1)},
        "private_mib_per_engine": round(float(np.mean(memory)), 1),
    }
    if args.scaling:
        sc = scaling(boards, n, go, args.hash)
        for label, rows_ in sc.items():
            print(f"  raw limit, {label} evaluation:")
            for r in rows_:
                print(
                    f"    {r['engines']:3d} engines {r['evals_per_s']:8.1f} evals/s  "
                    f"{r['vs_one_engine']:5.2f}x one engine  {r['of_linear']:.2f} of linear  "
                    f"{r['private_mib_per_engine']:.0f} MiB private each"
                )
        out["scaling"] = sc
    if args.quality:
        q = quality(
            distinct_positions(args.quality_positions, np.random.default_rng(11)), n, args.hash
        )
        for name, row in q.items():
            print(
                f"  {name:10s} {row['evals_per_s']:9.1f} evals/s fresh, "
                f"{row.get('evals_per_s_warm', 0):9.1f} warm;"
                f"  rank agreement with depth 12: "
                f"{row['spearman_vs_depth12']:.3f}"
            )
        out["quality"] = q
    print(json.dumps(out))


if __name__ == "__main__":
    main()
