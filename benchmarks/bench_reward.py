"""The Stockfish reward service: pool throughput and the cache hit rate of a self-play rollout.

1. Evaluations per second of a ``--engines``-process pool on a batch of distinct positions
   vs one engine evaluating the same positions sequentially, same limit, cache off.
2. Cache hit rate over a realistic rollout: ``--roots`` random-opening roots x ``--group``
   group members x ``--plies`` plies of random legal play through the core's BoardGameEnv,
   every position scored (as the trainer's reward does).

    .venv/bin/python benchmarks/bench_reward.py [--positions 96] [--depth 8]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import chess
import numpy as np

STOCKFISH = "/usr/games/stockfish"


def distinct_positions(n: int, rng: np.random.Generator) -> list[chess.Board]:
    """``n`` distinct non-terminal positions from random play (openings to middlegames)."""
    from chessrl.envs.chess.starts import distinct_random_positions

    return distinct_random_positions(n, rng, (4, 60))


def evals_per_second(
    engines: int, boards: list[chess.Board], depth: int | None, driver: dict | None = None, **pool
) -> tuple[float, float]:
    """(evaluations per second, overlap): overlap = summed search time / wall time, i.e. how
    many searches ran at once on average (the pool's concurrency, whatever the CPU gave it).
    With ``driver``, also stores there the CPU time of this Python process (the driver) per
    evaluation, in microseconds, as ``cpu_us``."""
    from chessrl.envs.chess.stockfish import StockfishPool

    pool = StockfishPool(STOCKFISH, engines=engines, depth=depth, cache_size=0, **pool)
    try:
        pool.start_all()
        pool.values(boards[:engines])  # warm up: processes and first search
        busy0 = pool.engine_busy_seconds
        cpu0, t0 = time.process_time(), time.perf_counter()
        pool.values(boards)
        wall = time.perf_counter() - t0
        if driver is not None:
            driver["cpu_us"] = 1e6 * (time.process_time() - cpu0) / len(boards)
        return len(boards) / wall, (pool.engine_busy_seconds - busy0) / wall
    finally:
        pool.close()


def rollout_hit_rate(roots: int, group: int, plies: int, depth: int, engines: int) -> dict:
    import torch
    from bench_env import sample_legal  # same directory

    from chessrl.env import BoardGameEnv
    from chessrl.envs.chess.game import ChessGame

    game = ChessGame(depth=depth, engines=engines, start="random", random_plies=8)
    env = BoardGameEnv(game, batch_size=(roots, group), seed=0)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    td = env.reset()
    for _ in range(plies):
        mask = td["action_mask"].reshape(roots * group, -1).numpy()
        td["action"] = torch.from_numpy(sample_legal(mask, rng)).reshape(roots, group)
        td = env.step(td)["next"]
    seconds = time.perf_counter() - t0
    stats = game.stats()
    env.close()
    game.close()
    return {
        "hit_rate": stats["hit_rate"],
        "hits": stats["hits"],
        "misses": stats["misses"],
        "evaluations": stats["evaluations"],
        "seconds": seconds,
        "engine_seconds": stats["engine_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=96)
    parser.add_argument("--depth", type=int, default=8, help="depth pin of both measurements")
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--roots", type=int, default=4)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--plies", type=int, default=16)
    args = parser.parse_args()
    boards = distinct_positions(args.positions, np.random.default_rng(0))
    single, _ = evals_per_second(1, boards, args.depth)
    pooled, overlap = evals_per_second(args.engines, boards, args.depth)
    speedup = pooled / single
    with open("/proc/loadavg") as fh:
        load = float(fh.read().split()[0])
    print(
        f"1 engine, sequential : {single:8.1f} evals/s  "
        f"({len(boards)} positions, depth {args.depth})"
    )
    print(
        f"{args.engines}-engine pool       : {pooled:8.1f} evals/s  "
        f"(searches in flight: {overlap:.2f})"
    )
    print(f"machine              : {os.cpu_count()} cores, load average {load:.2f}")
    print(f"speed-up             : {speedup:8.2f}x")
    roll = rollout_hit_rate(args.roots, args.group, args.plies, args.depth, args.engines)
    print(
        f"rollout {args.roots}x{args.group}x{args.plies}: hit rate {roll['hit_rate']:.3f} "
        f"({roll['hits']} hits, {roll['misses']} misses, {roll['evaluations']} searches), "
        f"{roll['seconds']:.2f} s, engine {roll['engine_seconds']:.2f} s"
    )
    print(
        json.dumps(
            {
                "depth": args.depth,
                "engines": args.engines,
                "evals_per_s": {"single": round(single, 1), "pool": round(pooled, 1)},
                "speedup": round(speedup, 3),
                "speedup_target_met": speedup >= 1.8,
                "searches_in_flight": round(overlap, 2),
                "cores": os.cpu_count(),
                "load_average": load,
                "rollout": {
                    k: (round(v, 4) if isinstance(v, float) else v) for k, v in roll.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
