"""Random legal play, plies per second: our chess env vs PettingZoo chess_v6 vs bare python-chess.

Every contender plays uniformly random legal moves and restarts a game when it ends or
reaches ``--max-plies``:

* ``python_chess``: one ``chess.Board``; per ply ``list(board.legal_moves)`` and ``push``
  (no observation, no game-end rules): the floor any python-chess env pays.
* ``chess_game``: ``ChessGame.observe`` (tokens, masks, game-end rules) + ``play`` over a
  batch of ``--batch`` boards, actions drawn from the masks with NumPy.
* ``board_game_env``: the same through the core's TorchRL ``BoardGameEnv`` (TensorDicts,
  spec masks), batch ``--batch``.
* ``pettingzoo``: ``pettingzoo.classic.chess_v6`` AEC env (8x8x111 observation planes).

Rewards are off (``reward="none"``: non-terminal values are 0, no Stockfish), so this
measures the env alone; bench_reward.py measures the engine. The last line is JSON.

    .venv/bin/python benchmarks/bench_env.py [--batch 256] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import time

import chess
import numpy as np


def sample_legal(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random True column per row of ``mask`` (rows without one get 0)."""
    counts = mask.sum(axis=1)
    rows, cols = np.nonzero(mask)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = starts + (rng.random(len(mask)) * counts).astype(np.int64)
    return np.where(counts > 0, cols[np.minimum(pick, len(cols) - 1)] if len(cols) else 0, 0)


def bench_python_chess(seconds: float, max_plies: int, rng: np.random.Generator) -> float:
    board, plies, game_plies = chess.Board(), 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            moves = list(board.legal_moves)
            if not moves or game_plies >= max_plies:
                board, game_plies = chess.Board(), 0
                continue
            board.push(moves[int(rng.integers(len(moves)))])
            plies += 1
            game_plies += 1
    return plies / (time.perf_counter() - t0)


def bench_chess_game(seconds: float, batch: int, max_plies: int, rng: np.random.Generator) -> float:
    from chessrl.envs.chess.game import ChessGame

    game = ChessGame(reward="none")
    states = game.initial_states(batch, rng)
    ply = np.zeros(batch, dtype=np.int64)
    plies = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        obs = game.observe(states)
        mask = obs.action_mask
        over = np.flatnonzero(obs.terminated | (ply >= max_plies))
        if over.size:  # restart finished boards (observing just those again)
            for i in over:
                states[i] = game.initial_states(1, rng)[0]
                ply[i] = 0
            mask[over] = game.observe([states[i] for i in over]).action_mask
        actions = sample_legal(mask, rng)
        game.play(states, actions)
        ply += 1
        plies += batch
    game.close()
    return plies / (time.perf_counter() - t0)


def bench_board_game_env(
    seconds: float, batch: int, max_plies: int, rng: np.random.Generator
) -> float:
    import torch

    from chessrl.env import BoardGameEnv
    from chessrl.envs.chess.game import ChessGame

    env = BoardGameEnv(ChessGame(reward="none", max_plies=max_plies), batch_size=(batch,), seed=0)
    plies = 0
    t0 = time.perf_counter()
    td = env.reset()
    while time.perf_counter() - t0 < seconds:
        done = td["done"].reshape(-1).numpy()
        if done.all():
            td = env.reset()
            continue
        actions = sample_legal(td["action_mask"].numpy(), rng)
        td["action"] = torch.from_numpy(actions)
        td = env.step(td)["next"]
        plies += int((~done).sum())
    env.close()
    return plies / (time.perf_counter() - t0)


def bench_pettingzoo(seconds: float, max_plies: int, rng: np.random.Generator) -> float:
    try:
        import pygame  # noqa: F401 - chess_v6 imports it at module level, for rendering only
    except ImportError:
        # Without pettingzoo[classic]'s pygame the module cannot even be imported; we never
        # render, so an empty stand-in module is enough (measured play is unaffected).
        import sys
        import types

        sys.modules["pygame"] = types.ModuleType("pygame")
    from pettingzoo.classic import chess_v6

    env = chess_v6.env()
    env.reset(seed=0)
    plies, game_plies = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        obs, _reward, term, trunc, _info = env.last()
        if term or trunc or game_plies >= max_plies:
            env.reset()
            game_plies = 0
            continue
        legal = np.flatnonzero(obs["action_mask"])
        env.step(int(legal[int(rng.integers(len(legal)))]))
        plies += 1
        game_plies += 1
    env.close()
    return plies / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="wall time per contender")
    parser.add_argument("--max-plies", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {
        "python_chess": bench_python_chess(args.seconds, args.max_plies, rng),
        "chess_game": bench_chess_game(args.seconds, args.batch, args.max_plies, rng),
        "board_game_env": bench_board_game_env(args.seconds, args.batch, args.max_plies, rng),
        "pettingzoo": bench_pettingzoo(args.seconds, args.max_plies, rng),
    }
    for name, rate in results.items():
        print(f"{name:>15}: {rate:10.0f} plies/s")
    ratios = {
        "board_game_env_vs_pettingzoo": results["board_game_env"] / results["pettingzoo"],
        "board_game_env_vs_python_chess": results["board_game_env"] / results["python_chess"],
        "chess_game_vs_python_chess": results["chess_game"] / results["python_chess"],
    }
    for name, ratio in ratios.items():
        print(f"{name:>32}: {ratio:6.2f}x")
    targets = {
        "vs_pettingzoo>=10": ratios["board_game_env_vs_pettingzoo"] >= 10,
        "vs_python_chess>=0.5": ratios["board_game_env_vs_python_chess"] >= 0.5,
    }
    print(
        json.dumps(
            {
                "batch": args.batch,
                "plies_per_s": {k: round(v) for k, v in results.items()},
                "ratios": {k: round(v, 3) for k, v in ratios.items()},
                "targets_met": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
