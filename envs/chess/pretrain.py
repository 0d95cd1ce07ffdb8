"""``chessrl pretrain CONFIG``: pretrain the chess policy by Stockfish distillation.

Pipeline (docs/pretraining.md):

1. **Generate** positions in shards of ``data.shard_size``: random positions (random openings
   of ``data.opening_plies`` plies, 20-40-ply middlegames and random endgames, weighted by
   ``data.phase_mix``) and self-play positions (games from a random opening in which each
   side plays Stockfish's best move, or with probability ``data.selfplay_epsilon`` a random
   legal move). Shard ``s`` draws only from ``np.random.default_rng([seed, s])``.
2. **Label** every position with Stockfish's ``labels.multipv`` best moves and their scores at
   a fixed ``labels.depth`` or ``labels.nodes``. Shards are written atomically under
   ``cache_dir/labels-<key>/``; a second run loads them without starting an engine, and an
   interrupted run regenerates only the missing shards.
3. **Check** the labels (distinct positions, legality, spread of the multi-PV targets) and
   stop with a :class:`UserError` naming each failed check.
4. **Train** the policy with cross-entropy over legal moves against soft targets
   ``(1 - best_weight) * softmax((cp - cp_best) / temperature_cp) + best_weight * onehot(best)``,
   report held-out top-1 / top-5 agreement with Stockfish and the loss, and save a
   checkpoint that ``[policy] init_checkpoint`` and ``chessrl eval`` accept.

No global random generator is seeded or drawn from: numpy ``Generator`` objects and a
``torch.Generator`` carry every random choice (the policy init runs under ``fork_rng``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import chess
import chess.engine
import numpy as np
import torch

from chessrl import checkpoint
from chessrl.trainer import resolve_device
from chessrl.config import PolicyConfig, apply_overrides, read_toml
from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame, ChessState
from chessrl.envs.chess.options import ChessOptions
from chessrl.envs.chess.starts import MIDDLEGAME_PLIES, random_endgame, random_play
from chessrl.envs.chess.stockfish import StockfishPool
from chessrl.errors import UserError
from chessrl.policy import Policy, build_policy, log_probs
from chessrl.schema import Locator, build, opt, section, to_dict

CACHE_FORMAT = 1
MASK_BYTES = (enc.N_ACTIONS + 7) // 8


# --- config -------------------------------------------------------------------------------

@dataclass
class DataConfig:
    positions: int = opt(16000, "positions to generate and label (before de-duplication)", ge=10)
    shard_size: int = opt(1000, "positions per cache shard (the unit of resumption)", ge=1)
    selfplay_fraction: float = opt(0.5, "fraction of positions taken from engine self-play games; "
                                   "the rest are random positions", ge=0.0, le=1.0)
    phase_mix: list[float] = opt([0.6, 0.25, 0.15], "weights of random opening, middlegame (20-40 "
                                 "random plies) and endgame (kings + 1-4 pieces) positions")
    opening_plies: list[int] = opt([2, 16], "inclusive range of random plies of an opening position "
                                   "and of a self-play game's start")
    selfplay_epsilon: float = opt(0.25, "probability that a self-play move is a random legal move "
                                  "instead of Stockfish's best", ge=0.0, le=1.0)
    selfplay_max_plies: int = opt(120, "a self-play game stops after this many plies", ge=1)
    selfplay_games: int = opt(8, "self-play games advanced together (one engine batch per ply)", ge=1)

    def __post_init__(self) -> None:
        if len(self.phase_mix) != 3 or any(w < 0 for w in self.phase_mix) or sum(self.phase_mix) <= 0:
            raise ValueError(f"phase_mix = {self.phase_mix} must be 3 non-negative weights with a positive sum")
        if len(self.opening_plies) != 2 or not 0 <= self.opening_plies[0] <= self.opening_plies[1] <= 200:
            raise ValueError(f"opening_plies = {self.opening_plies} must be [lo, hi] with 0 <= lo <= hi <= 200")


@dataclass
class LabelConfig:
    depth: int = opt(8, "Stockfish search depth of the labels; 0 = use nodes", ge=0, le=40)
    nodes: int = opt(0, "Stockfish node budget of the labels; 0 = use depth", ge=0)
    multipv: int = opt(5, "principal variations per position (the soft target's moves)", ge=1, le=50)
    temperature_cp: float = opt(100.0, "centipawns per unit of the soft target's softmax over the "
                                "multi-PV scores (not part of the cache key)", gt=0.0)
    best_weight: float = opt(0.25, "weight of the one-hot best move mixed into the soft target "
                             "(not part of the cache key)", ge=0.0, le=1.0)

    def __post_init__(self) -> None:
        if (self.depth > 0) == (self.nodes > 0):
            raise ValueError(f"set exactly one of depth ({self.depth}) and nodes ({self.nodes}) above 0")


@dataclass
class TrainConfig:
    epochs: int = opt(5, "passes over the training positions", ge=1)
    batch_size: int = opt(256, "positions per optimiser step", ge=1)
    lr: float = opt(1e-3, "AdamW peak learning rate (linear warm-up, cosine decay)", gt=0.0)
    weight_decay: float = opt(0.01, "AdamW weight decay", ge=0.0)
    warmup_steps: int = opt(30, "optimiser steps of linear learning-rate warm-up", ge=0)
    holdout_fraction: float = opt(0.05, "fraction of distinct positions held out (split by a hash of "
                                  "the position, so duplicates never straddle the split)", gt=0.0, lt=1.0)
    threads: int = opt(0, "torch CPU threads (0 = torch's default)", ge=0)
    progress: bool = opt(True, "show a progress bar")


@dataclass
class CheckConfig:
    min_distinct: float = opt(0.8, "minimum fraction of generated positions that are distinct", ge=0.0, le=1.0)
    min_spread: float = opt(0.2, "minimum fraction of positions (with 2+ legal moves) whose target puts "
                            ">= 5% of its mass off the best move (when multipv > 1)", ge=0.0, le=1.0)
    max_flat: float = opt(0.5, "maximum fraction of positions whose multi-PV target is flat (all its "
                          "moves within 0.02 probability of each other)", ge=0.0, le=1.0)


@dataclass
class PretrainConfig:
    name: str = opt("pretrain", "name shown in the progress bar and stored in the checkpoint")
    seed: int = opt(0, "seed of position generation, the hold-out split, the init and the batch order")
    device: str = opt("cpu", "'cpu', 'cuda' or 'auto'", choices=("cpu", "cuda", "auto"))
    output: str = opt("runs/pretrain/pretrained.pt", "checkpoint to write ([policy] init_checkpoint accepts it)")
    cache_dir: str = opt("runs/pretrain/cache", "directory of the labelled-position cache")
    policy: PolicyConfig = section(PolicyConfig, "the policy network (same keys as a training config)")
    data: DataConfig = section(DataConfig, "position generation")
    labels: LabelConfig = section(LabelConfig, "Stockfish labels")
    train: TrainConfig = section(TrainConfig, "distillation training")
    checks: CheckConfig = section(CheckConfig, "label checks run before training")
    env: Any = None  # ChessOptions from the [env] section (engine path, engines, hash ...)


def load_pretrain_config(path: str | Path, overrides: list[str] = ()) -> PretrainConfig:
    data, text = read_toml(path)
    data = apply_overrides(data, list(overrides))
    return pretrain_config_from_dict(data, Locator(str(path), text))


def pretrain_config_from_dict(data: dict, loc: Locator | None = None) -> PretrainConfig:
    loc = loc or Locator()
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise UserError(f"{loc.where('env')}'env' must be a table")
    if env.get("name", "chess") != "chess":
        raise UserError(f"{loc.where('env.name')}'env.name' = {env['name']!r}: pretraining is chess-only")
    cfg = build(PretrainConfig, {k: v for k, v in data.items() if k != "env"}, loc=loc)
    cfg.env = build(ChessOptions, env, prefix="env", loc=loc, extra=("name",))
    return cfg


# --- generation and labelling -----------------------------------------------------------

def epd_key(fen: str) -> str:
    """The position part of a FEN (board, side, castling, en passant): duplicates share it."""
    return " ".join(fen.split()[:4])


def _hash01(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0 ** 64


def cache_key(cfg: PretrainConfig) -> str:
    """What the labels depend on: generation, the label search, the seed and the engine.

    ``data.positions`` is left out: shard ``s`` depends only on the seed, ``s`` and the other
    generation settings, so raising ``positions`` reuses every full shard already labelled."""
    data = to_dict(cfg.data)
    data.pop("positions")
    blob = json.dumps({"format": CACHE_FORMAT, "seed": cfg.seed, "data": data,
                       "depth": cfg.labels.depth, "nodes": cfg.labels.nodes, "multipv": cfg.labels.multipv,
                       "stockfish": cfg.env.stockfish_path}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Labeller:
    """A Stockfish pool started on first use; ``searches`` counts positions sent to it."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.pool: StockfishPool | None = None
        self.limit = (chess.engine.Limit(depth=cfg.labels.depth) if cfg.labels.depth > 0
                      else chess.engine.Limit(nodes=cfg.labels.nodes))

    @property
    def searches(self) -> int:
        return self.pool.searches if self.pool is not None else 0

    def __call__(self, boards: list[chess.Board]) -> list[list[tuple[chess.Move, int]]]:
        if self.pool is None:
            o = self.cfg.env
            self.pool = StockfishPool(o.stockfish_path, o.engines, o.hash_mb, depth=8, cache_size=0,
                                      retries=o.engine_retries, timeout=o.engine_timeout)
        return self.pool.analyse_multipv(boards, self.limit, self.cfg.labels.multipv)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _random_position(d: DataConfig, phase_p: np.ndarray, rng: np.random.Generator) -> chess.Board:
    phase = int(rng.choice(3, p=phase_p))
    if phase == 2:
        return random_endgame(rng)
    while True:
        lo, hi = (d.opening_plies if phase == 0 else MIDDLEGAME_PLIES)
        board = chess.Board()
        if random_play(board, int(rng.integers(lo, hi + 1)), rng):
            return board


def _opening(d: DataConfig, rng: np.random.Generator) -> chess.Board:
    while True:
        board = chess.Board()
        if random_play(board, int(rng.integers(d.opening_plies[0], d.opening_plies[1] + 1)), rng):
            return board


def generate_shard(cfg: PretrainConfig, n: int, shard: int, label: Callable) -> list[tuple[chess.Board, list]]:
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
            move = moves[int(rng.integers(len(moves)))] if rng.random() < d.selfplay_epsilon else lab[0][0]
            board.push(move)
            plies[k] += 1
            if plies[k] >= d.selfplay_max_plies or board.is_game_over(claim_draw=True):
                games[k], plies[k] = _opening(d, rng), 0
    return out


def encode_shard(rows: list[tuple[chess.Board, list]], multipv: int) -> dict[str, np.ndarray]:
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
    return {"fen": np.array([b.fen() for b, _ in rows], dtype="<U100"),
            "tokens": obs.tokens.astype(np.uint8), "mask": np.packbits(obs.action_mask, axis=1),
            "uci": uci, "cp": cp, "actions": actions}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def labelled_data(cfg: PretrainConfig, log: Callable[[str], None] = print,
                  labeller: Labeller | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All shards (loaded from the cache or generated now) concatenated, and cache facts."""
    d = cfg.data
    cache = Path(cfg.cache_dir) / f"labels-{cache_key(cfg)}"
    cache.mkdir(parents=True, exist_ok=True)
    manifest = cache / "manifest.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"format": CACHE_FORMAT, "seed": cfg.seed, "data": to_dict(cfg.data),
                                        "labels": {"depth": cfg.labels.depth, "nodes": cfg.labels.nodes,
                                                   "multipv": cfg.labels.multipv},
                                        "stockfish": cfg.env.stockfish_path}, indent=2) + "\n")
    n_shards = math.ceil(d.positions / d.shard_size)
    own = labeller is None
    labeller = labeller or Labeller(cfg)
    shards, loaded, generated = [], 0, 0
    t0 = time.perf_counter()
    try:
        for s in range(n_shards):
            n = min(d.shard_size, d.positions - s * d.shard_size)
            path = cache / f"shard_{s:05d}.npz"
            if path.exists():
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
                if len(arrays["fen"]) == n:
                    shards.append(arrays)
                    loaded += 1
                    continue
            arrays = encode_shard(generate_shard(cfg, n, s, labeller), cfg.labels.multipv)
            _save_npz(path, arrays)
            shards.append(arrays)
            generated += 1
            done = s + 1
            log(f"labelled shard {done}/{n_shards} ({done * d.shard_size if done < n_shards else d.positions} "
                f"positions, {time.perf_counter() - t0:.0f} s)")
    finally:
        if own:
            labeller.close()
    data = {k: np.concatenate([sh[k] for sh in shards]) for k in shards[0]}
    return data, {"cache": str(cache), "shards_loaded": loaded, "shards_generated": generated,
                  "engine_searches": labeller.searches}


# --- label checks and targets -----------------------------------------------------------

def soft_targets(cp: np.ndarray, actions: np.ndarray, temperature_cp: float, best_weight: float) -> np.ndarray:
    """float32 [n, K] target probabilities of the multi-PV moves (0 for padding)."""
    valid = actions >= 0
    x = np.where(valid, (cp - cp[:, :1]).astype(np.float64) / temperature_cp, -np.inf)
    x = x - x.max(axis=1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    onehot[:, 0] = 1.0
    return ((1.0 - best_weight) * p + best_weight * onehot).astype(np.float32)


def check_labels(cfg: PretrainConfig, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Label statistics; a :class:`UserError` listing every failed check."""
    n = len(data["fen"])
    keys = [epd_key(f) for f in data["fen"]]
    distinct = len(set(keys)) / max(n, 1)
    mask = np.unpackbits(data["mask"], axis=1, count=enc.N_ACTIONS).astype(bool)
    illegal = 0
    labelled = 0
    for i in range(n):
        board = chess.Board(data["fen"][i])
        for j, u in enumerate(data["uci"][i]):
            if not u:
                continue
            labelled += 1
            a = int(data["actions"][i, j])
            try:
                ok = board.is_legal(chess.Move.from_uci(str(u))) and a >= 0 and bool(mask[i, a])
            except ValueError:
                ok = False
            illegal += not ok
    no_label = int((data["uci"][:, 0] == "").sum())
    probs = soft_targets(data["cp"], data["actions"], cfg.labels.temperature_cp, cfg.labels.best_weight)
    soft_only = soft_targets(data["cp"], data["actions"], cfg.labels.temperature_cp, 0.0)
    k = (data["actions"] >= 0).sum(axis=1)
    multi = mask.sum(axis=1) >= 2
    spread = float((probs[multi].max(axis=1) <= 0.95).mean()) if multi.any() else 0.0
    with np.errstate(invalid="ignore"):
        valid = data["actions"] >= 0
        hi = np.where(valid, soft_only, -np.inf).max(axis=1)
        lo = np.where(valid, soft_only, np.inf).min(axis=1)
    flat = float(((k >= 2) & (hi - lo < 0.02)).sum() / max(int((k >= 2).sum()), 1))
    stats = {"positions": n, "distinct_fraction": distinct, "illegal_labels": illegal, "labels": labelled,
             "unlabelled_positions": no_label, "spread_fraction": spread, "flat_fraction": flat,
             "mean_pv_moves": float(k.mean()) if n else 0.0,
             "mean_target_max": float(probs.max(axis=1).mean()) if n else 0.0}
    c = cfg.checks
    failed = []
    if distinct < c.min_distinct:
        failed.append(f"distinct positions {distinct:.3f} < {c.min_distinct} ([checks] min_distinct; "
                      "widen [data] opening_plies or raise selfplay_fraction)")
    if illegal or no_label:
        failed.append(f"{illegal} of {labelled} label moves are illegal and {no_label} positions have no label "
                      "(a corrupt cache or a broken engine; delete the cache directory)")
    if cfg.labels.multipv > 1 and spread < c.min_spread:
        failed.append(f"multi-PV spread {spread:.3f} < {c.min_spread} ([checks] min_spread; the targets are "
                      "almost one-hot: raise [labels] temperature_cp or lower best_weight)")
    if cfg.labels.multipv > 1 and flat > c.max_flat:
        failed.append(f"flat multi-PV targets {flat:.3f} > {c.max_flat} ([checks] max_flat; lower "
                      "[labels] temperature_cp)")
    if failed:
        raise UserError("label checks failed: " + "; ".join(failed))
    return stats


# --- training ---------------------------------------------------------------------------

class _ChessSizes:
    """What :func:`chessrl.policy.build_policy` reads of a game, without starting an engine."""

    name, obs_vocab, obs_len, n_actions = "chess", enc.OBS_VOCAB, enc.OBS_LEN, enc.N_ACTIONS

    @staticmethod
    def action_structure():
        return enc.ACTION_STRUCTURE


def new_policy(cfg: PretrainConfig) -> Policy:
    """The configured policy (the trainer's builder: sizes, head, init checkpoint, frozen
    layers), initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_policy(cfg.policy, _ChessSizes())


class Tensors:
    """A split of the data as tensors: tokens, masks, multi-PV actions and target probs."""

    def __init__(self, data: dict[str, np.ndarray], rows: np.ndarray, labels: LabelConfig):
        self.tokens = torch.from_numpy(data["tokens"][rows].astype(np.int64))
        self.mask = torch.from_numpy(np.unpackbits(data["mask"][rows], axis=1, count=enc.N_ACTIONS).astype(bool))
        acts = data["actions"][rows].astype(np.int64)
        self.probs = torch.from_numpy(soft_targets(data["cp"][rows], data["actions"][rows],
                                                   labels.temperature_cp, labels.best_weight))
        self.actions = torch.from_numpy(np.where(acts >= 0, acts, 0))
        self.best = self.actions[:, 0]

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, idx: torch.Tensor, device: torch.device):
        target = torch.zeros(len(idx), enc.N_ACTIONS).scatter_add_(1, self.actions[idx], self.probs[idx])
        return (self.tokens[idx].to(device), self.mask[idx].to(device), target.to(device),
                self.best[idx].to(device))


def loss_and_logp(policy: torch.nn.Module, tokens, mask, target):
    lp = log_probs(policy, tokens, mask, 1.0)
    loss = -(target * torch.where(mask, lp, torch.zeros_like(lp))).sum(-1).mean()
    return loss, lp


@torch.no_grad()
def evaluate(policy: torch.nn.Module, split: Tensors, device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """Held-out loss and top-1 / top-5 agreement with Stockfish's best move."""
    total = top1 = top5 = 0.0
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        tokens, mask, target, best = split.batch(idx, device)
        loss, lp = loss_and_logp(policy, tokens, mask, target)
        total += float(loss) * len(idx)
        top1 += float((lp.argmax(-1) == best).sum())
        top5 += float((lp.topk(5, dim=-1).indices == best[:, None]).any(-1).sum())
    n = max(len(split), 1)
    from chessrl.stats import wilson

    lo1, hi1 = wilson(top1, len(split))
    lo5, hi5 = wilson(top5, len(split))
    return {"loss": total / n, "top1": top1 / n, "top5": top5 / n, "top1_lo": lo1, "top1_hi": hi1,
            "top5_lo": lo5, "top5_hi": hi5, "positions": len(split)}


def random_baseline(split: Tensors) -> dict[str, float]:
    """What a uniformly random legal mover scores, exactly (expected values)."""
    n_legal = split.mask.sum(-1).double()
    # uniform over legal moves: every target move has log-prob -log(n), so the loss is log(n)
    return {"loss": float(torch.log(n_legal).mean()), "top1": float((1.0 / n_legal).mean()),
            "top5": float((torch.clamp(n_legal, max=5) / n_legal).mean())}


def train_policy(cfg: PretrainConfig, data: dict[str, np.ndarray], log: Callable[[str], None] = print
                 ) -> tuple[Policy, dict[str, Any]]:
    t = cfg.train
    device = resolve_device(cfg.device)
    keys = [epd_key(f) for f in data["fen"]]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    unique = np.array(sorted(first.values()), dtype=np.int64)
    salt = f"{cfg.seed}:"
    held = np.array([_hash01(salt + keys[i]) < t.holdout_fraction for i in unique], dtype=bool)
    train_rows, test_rows = unique[~held], unique[held]
    if len(test_rows) == 0 or len(train_rows) == 0:
        raise UserError(f"{len(unique)} distinct positions give an empty train or hold-out split; "
                        "raise [data] positions or change [train] holdout_fraction")
    train_split = Tensors(data, train_rows, cfg.labels)
    test_split = Tensors(data, test_rows, cfg.labels)
    policy = new_policy(cfg).to(device)
    save_checkpoint(cfg, policy, {"initial": True}, initial_path(cfg.output))
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_split) / t.batch_size)
    total = steps_per_epoch * t.epochs

    def lr_at(step: int) -> float:
        if step < t.warmup_steps:
            return t.lr * (step + 1) / t.warmup_steps
        frac = (step - t.warmup_steps) / max(total - t.warmup_steps, 1)
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    history = []
    policy.eval()  # no dropout exists; the mode never changes the output
    initial = evaluate(policy, test_split, device)
    baseline = random_baseline(test_split)
    log(f"hold-out before training: loss {initial['loss']:.3f} top-1 {initial['top1']:.3f} "
        f"top-5 {initial['top5']:.3f}; a random mover: top-1 {baseline['top1']:.3f} top-5 {baseline['top5']:.3f}")
    bar = None
    if t.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=cfg.name, unit="batch", dynamic_ncols=True, file=sys.stderr)
    step = 0
    t0 = time.perf_counter()
    try:
        for epoch in range(1, t.epochs + 1):
            perm = torch.randperm(len(train_split), generator=gen)
            running = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * t.batch_size:(b + 1) * t.batch_size]
                tokens, mask, target, _ = train_split.batch(idx, device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                loss, _ = loss_and_logp(policy, tokens, mask, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                running += loss.item()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss):.3f}")
            held_out = evaluate(policy, test_split, device)
            row = {"epoch": epoch, "train_loss": running / steps_per_epoch, **{f"heldout_{k}": v for k, v in held_out.items()},
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            log(f"epoch {epoch}/{t.epochs}: train loss {row['train_loss']:.3f}, hold-out loss {held_out['loss']:.3f} "
                f"top-1 {held_out['top1']:.3f} top-5 {held_out['top5']:.3f}")
    finally:
        if bar is not None:
            bar.close()
    final = evaluate(policy, test_split, device)
    return policy, {"heldout": final, "initial": initial, "random": baseline, "history": history,
                    "train_positions": len(train_split), "heldout_positions": len(test_split),
                    "distinct_positions": int(len(unique)), "steps": step}


def initial_path(output: str | Path) -> Path:
    """Where the untrained policy is saved: ``<output stem>.initial.pt`` beside the checkpoint
    (``chessrl eval --baselines`` plays it as the "initial" baseline)."""
    out = Path(output)
    return out.with_name(f"{out.stem}.initial.pt")


def save_checkpoint(cfg: PretrainConfig, policy: Policy, summary: dict[str, Any], path: Path | None = None) -> Path:
    out = Path(path or cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    policy_cfg = to_dict(cfg.policy)
    policy_cfg["init_checkpoint"] = ""
    state = {"policy": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
             "config": {"name": cfg.name, "seed": cfg.seed, "env": {"name": "chess", **to_dict(cfg.env)},
                        "policy": policy_cfg, "pretrain": to_dict(cfg)},
             "game": "chess", "step": 0, "policy_sizes": dict(policy.sizes), "pretrain": summary}
    state["config"]["pretrain"].pop("env", None)
    checkpoint.write(out, state)
    if path is None:
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return out


def pretrain(cfg: PretrainConfig, log: Callable[[str], None] = print, labeller: Labeller | None = None
             ) -> dict[str, Any]:
    """The whole pipeline; returns the summary (also written next to the checkpoint as JSON)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t0 = time.perf_counter()
    data, cache = labelled_data(cfg, log, labeller)
    log(f"labels: {len(data['fen'])} positions in {cache['cache']} ({cache['shards_loaded']} shards from "
        f"the cache, {cache['shards_generated']} generated, {cache['engine_searches']} engine searches)")
    checks = check_labels(cfg, data)
    log(f"label checks passed: distinct {checks['distinct_fraction']:.3f}, spread {checks['spread_fraction']:.3f}, "
        f"flat {checks['flat_fraction']:.3f}, {checks['mean_pv_moves']:.2f} PV moves per position")
    t1 = time.perf_counter()
    policy, summary = train_policy(cfg, data, log)
    summary.update(cache=cache, checks=checks, label_seconds=t1 - t0, train_seconds=time.perf_counter() - t1)
    out = save_checkpoint(cfg, policy, summary)
    h, r = summary["heldout"], summary["random"]
    log(f"saved {out}: hold-out top-1 {h['top1']:.3f} [95% CI {h['top1_lo']:.3f}, {h['top1_hi']:.3f}] "
        f"(random {r['top1']:.3f}), top-5 {h['top5']:.3f} [{h['top5_lo']:.3f}, {h['top5_hi']:.3f}] "
        f"(random {r['top5']:.3f}), loss {h['loss']:.3f} (random {r['loss']:.3f})")
    summary["output"] = str(out)
    return summary


def cmd_pretrain(args) -> int:
    cfg = load_pretrain_config(args.config, args.overrides)
    if args.no_progress:
        cfg.train.progress = False
    pretrain(cfg)
    return 0
