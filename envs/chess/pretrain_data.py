"""Pretraining data: positions generated shard by shard, labelled by Stockfish, cached.

Shard ``s`` draws only from ``np.random.default_rng([seed, s])``: random positions (openings,
middlegames, endgames by ``data.phase_mix``) then self-play positions. Shards are written
atomically under ``cache_dir/labels-<key>/``; a second run loads them without starting an
engine, and an interrupted run regenerates only the missing shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import chess
import chess.engine
import numpy as np

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState
from chessrl.envs.chess.options import ChessOptions
from chessrl.envs.chess.pretrain_config import DataConfig, PretrainConfig
from chessrl.envs.chess.starts import MIDDLEGAME_PLIES, random_endgame, random_play
from chessrl.envs.chess.stockfish import StockfishPool
from chessrl.schema import to_dict

CACHE_FORMAT = 1
MASK_BYTES = (enc.N_ACTIONS + 7) // 8

Labels = list[tuple[chess.Move, int]]  # a position's multi-PV moves and centipawn scores


def epd_key(fen: str) -> str:
    """The position part of a FEN (board, side, castling, en passant): duplicates share it."""
    return " ".join(fen.split()[:4])


def hash01(key: str) -> float:
    """A uniform number in [0, 1) fixed by ``key`` (the hold-out split)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def cache_key(cfg: PretrainConfig) -> str:
    """What the labels depend on: generation, the label search, the seed and the engine.

    ``data.positions`` is left out: shard ``s`` depends only on the seed, ``s`` and the other
    generation settings, so raising ``positions`` reuses every full shard already labelled."""
    data = to_dict(cfg.data)
    data.pop("positions")
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "seed": cfg.seed,
            "data": data,
            "depth": cfg.labels.depth,
            "nodes": cfg.labels.nodes,
            "multipv": cfg.labels.multipv,
            "stockfish": cfg.env.stockfish_path,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Labeller:
    """A Stockfish pool started on first use; ``searches`` counts positions sent to it."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.pool: StockfishPool | None = None
        self.limit = (
            chess.engine.Limit(depth=cfg.labels.depth)
            if cfg.labels.depth > 0
            else chess.engine.Limit(nodes=cfg.labels.nodes)
        )

    @property
    def searches(self) -> int:
        return self.pool.searches if self.pool is not None else 0

    def __call__(self, boards: list[chess.Board]) -> list[Labels]:
        if self.pool is None:
            o = self.cfg.env
            self.pool = StockfishPool(
                o.stockfish_path,
                o.engines,
                o.hash_mb,
                depth=8,
                cache_size=0,
                retries=o.engine_retries,
                timeout=o.engine_timeout,
            )
        return self.pool.analyse_multipv(boards, self.limit, self.cfg.labels.multipv)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _random_position(d: DataConfig, phase_p: np.ndarray, rng: np.random.Generator) -> chess.Board:
    phase = int(rng.choice(3, p=phase_p))
    if phase == 2:
        return random_endgame(rng)
    while True:
        lo, hi = d.opening_plies if phase == 0 else MIDDLEGAME_PLIES
        board = chess.Board()
        if random_play(board, int(rng.integers(lo, hi + 1)), rng):
            return board


def _opening(d: DataConfig, rng: np.random.Generator) -> chess.Board:
    while True:
        board = chess.Board()
        if random_play(board, int(rng.integers(d.opening_plies[0], d.opening_plies[1] + 1)), rng):
            return board


def generate_shard(
    cfg: PretrainConfig, n: int, shard: int, label: Callable[[list[chess.Board]], list[Labels]]
) -> list[tuple[chess.Board, Labels]]:
    """``n`` labelled positions of shard ``shard`` (random positions first, then self-play)."""
    d = cfg.data
    rng = np.random.default_rng([cfg.seed, shard])
    n_self = int(round(n * d.selfplay_fraction))
    phase_p = np.asarray(d.phase_mix, dtype=np.float64) / sum(d.phase_mix)
    boards = [_random_position(d, phase_p, rng) for _ in range(n - n_self)]
    out = list(zip(boards, label(boards))) if boards else []
    games = [_opening(d, rng) for _ in range(min(d.selfplay_games, n_self))]
    plies = [0] * len(games)
    taken = 0
    while taken < n_self:
        batch = games[: n_self - taken]
        labels = label(batch)
        for k, (board, lab) in enumerate(zip(batch, labels)):
            out.append((board.copy(), lab))
            taken += 1
            moves = list(board.legal_moves)
            explore = rng.random() < d.selfplay_epsilon
            board.push(moves[int(rng.integers(len(moves)))] if explore else lab[0][0])
            plies[k] += 1
            if plies[k] >= d.selfplay_max_plies or board.is_game_over(claim_draw=True):
                games[k], plies[k] = _opening(d, rng), 0
    return out


def encode_shard(rows: list[tuple[chess.Board, Labels]], multipv: int) -> dict[str, np.ndarray]:
    """A shard as arrays: FENs, observation tokens, packed legal masks and the multi-PV
    labels (UCI, centipawns, actions; -1 where a label is missing or illegal)."""
    n = len(rows)
    game = ChessGame(ChessOptions(reward="none"))
    obs = game.observe([ChessState(b) for b, _ in rows])
    uci = np.full((n, multipv), "", dtype="<U5")
    cp = np.zeros((n, multipv), dtype=np.int32)
    actions = np.full((n, multipv), -1, dtype=np.int16)
    for i, (board, lab) in enumerate(rows):
        for j, (move, score) in enumerate(lab[:multipv]):
            uci[i, j] = move.uci()
            cp[i, j] = score
            if board.is_legal(move):
                actions[i, j] = enc.move_to_action(move, board.turn)
    return {
        "fen": np.array([b.fen() for b, _ in rows], dtype="<U100"),
        "tokens": obs.tokens.astype(np.uint8),
        "mask": np.packbits(obs.action_mask, axis=1),
        "uci": uci,
        "cp": cp,
        "actions": actions,
    }


def tokens_for(data: dict[str, np.ndarray], features: str) -> np.ndarray:
    """The shards' observation tokens in the encoding ``features``. Shards store the piece
    encoding (so one label cache serves every encoding); other encodings recompute the square
    tokens from each FEN (attack counts and check squares depend only on the position) and
    shift the stored castling, en passant, clock and repetition tokens."""
    stored = data["tokens"].astype(np.int64)
    if features == "pieces" or not len(stored):
        return stored
    rows = [enc.board_features(chess.Board(str(fen)), False, 0, features) for fen in data["fen"]]
    out = np.empty_like(stored)
    out[:, :64] = enc.encode(rows)[:, :64]  # the square tokens; the rest are the stored ones
    out[:, 64:] = stored[:, 64:] + (enc.square_tokens(features) - enc.N_SQUARE_TOKENS)
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def _read_shard(path: Path) -> dict[str, Any] | None:
    """A cached shard's arrays; None for a damaged one (cut short, not a .npz, missing keys),
    which is labelled again: shards are a function of the config, so nothing is lost."""
    import zipfile

    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["fen"]  # noqa: B018 - a shard without it is damaged
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    return arrays


def _write_manifest(cfg: PretrainConfig, cache: Path) -> None:
    manifest = cache / "manifest.json"
    if not manifest.exists():
        labels = {
            "depth": cfg.labels.depth,
            "nodes": cfg.labels.nodes,
            "multipv": cfg.labels.multipv,
        }
        manifest.write_text(
            json.dumps(
                {
                    "format": CACHE_FORMAT,
                    "seed": cfg.seed,
                    "data": to_dict(cfg.data),
                    "labels": labels,
                    "stockfish": cfg.env.stockfish_path,
                },
                indent=2,
            )
            + "\n"
        )


def labelled_data(
    cfg: PretrainConfig, log: Callable[[str], None] = print, labeller: Labeller | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All shards (loaded from the cache or generated now) concatenated, and cache facts."""
    d = cfg.data
    cache = Path(cfg.cache_dir) / f"labels-{cache_key(cfg)}"
    cache.mkdir(parents=True, exist_ok=True)
    _write_manifest(cfg, cache)
    n_shards = math.ceil(d.positions / d.shard_size)
    own = labeller is None
    labeller = labeller or Labeller(cfg)
    shards, loaded, generated = [], 0, 0
    t0 = time.perf_counter()
    try:
        for s in range(n_shards):
            n = min(d.shard_size, d.positions - s * d.shard_size)
            path = cache / f"shard_{s:05d}.npz"
            cached = _read_shard(path) if path.exists() else None
            if cached is not None and len(cached["fen"]) == n:
                shards.append(cached)
                loaded += 1
                continue
            arrays = encode_shard(generate_shard(cfg, n, s, labeller), cfg.labels.multipv)
            _save_npz(path, arrays)
            shards.append(arrays)
            generated += 1
            done = s + 1
            positions = done * d.shard_size if done < n_shards else d.positions
            log(
                f"labelled shard {done}/{n_shards} ({positions} positions, "
                f"{time.perf_counter() - t0:.0f} s)"
            )
    finally:
        if own:
            labeller.close()
    data = {k: np.concatenate([sh[k] for sh in shards]) for k in shards[0]}
    return data, {
        "cache": str(cache),
        "shards_loaded": loaded,
        "shards_generated": generated,
        "engine_searches": labeller.searches,
    }


def soft_targets(
    cp: np.ndarray, actions: np.ndarray, temperature_cp: float, best_weight: float
) -> np.ndarray:
    """float32 [n, K] target probabilities of the multi-PV moves (0 for padding):
    ``(1 - best_weight) * softmax((cp - cp_best) / temperature_cp) + best_weight * onehot``."""
    valid = actions >= 0
    x = np.where(valid, (cp - cp[:, :1]).astype(np.float64) / temperature_cp, -np.inf)
    x = x - x.max(axis=1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[:, 0] = 1.0
    return ((1.0 - best_weight) * p + best_weight * onehot).astype(np.float32)
