"""The ``chessrl pretrain`` config: five sections declared with the run config's schema
machinery (:mod:`chessrl.schema`) and loaded by the same loader (:func:`chessrl.config.load_toml`),
so a mistake is the same one line (file and line, or the ``--set`` item; exit code 2).

``[policy]`` is the training config's own section; ``[env]`` holds chess options only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from chessrl.config import PolicyConfig, load_toml
from chessrl.envs.chess.options import ChessOptions
from chessrl.errors import UserError
from chessrl.schema import Locator, build, opt, section, table


@dataclass
class DataConfig:
    positions: int = opt(16000, "positions to generate and label (before de-duplication)", ge=10)
    shard_size: int = opt(1000, "positions per cache shard (the unit of resumption)", ge=1)
    selfplay_fraction: float = opt(
        0.5,
        "fraction of positions taken from engine self-play games; the rest are random positions",
        ge=0.0,
        le=1.0,
    )
    phase_mix: list[float] = opt(
        [0.6, 0.25, 0.15],
        "weights of random opening, middlegame (20-40 "
        "random plies) and endgame (kings + 1-4 pieces) positions",
    )
    opening_plies: list[int] = opt(
        [2, 16],
        "inclusive range of random plies of an opening position and of a self-play game's start",
    )
    selfplay_epsilon: float = opt(
        0.25,
        "probability that a self-play move is a random legal move instead of Stockfish's best",
        ge=0.0,
        le=1.0,
    )
    selfplay_max_plies: int = opt(120, "a self-play game stops after this many plies", ge=1)
    selfplay_games: int = opt(
        8, "self-play games advanced together (one engine batch per ply)", ge=1
    )

    def __post_init__(self) -> None:
        mix, plies = self.phase_mix, self.opening_plies
        if len(mix) != 3 or any(w < 0 for w in mix) or sum(mix) <= 0:
            raise ValueError(
                f"phase_mix = {mix} must be 3 non-negative weights with a positive sum"
            )
        if len(plies) != 2 or not 0 <= plies[0] <= plies[1] <= 200:
            raise ValueError(f"opening_plies = {plies} must be [lo, hi] with 0 <= lo <= hi <= 200")


@dataclass
class LabelConfig:
    depth: int = opt(8, "Stockfish search depth of the labels; 0 = use nodes", ge=0, le=40)
    nodes: int = opt(0, "Stockfish node budget of the labels; 0 = use depth", ge=0)
    multipv: int = opt(
        5, "principal variations per position (the soft target's moves)", ge=1, le=50
    )
    temperature_cp: float = opt(
        100.0,
        "centipawns per unit of the soft target's softmax over "
        "the multi-PV scores (not part of the cache key)",
        gt=0.0,
    )
    best_weight: float = opt(
        0.25,
        "weight of the one-hot best move mixed into the soft target (not part of the cache key)",
        ge=0.0,
        le=1.0,
    )

    def __post_init__(self) -> None:
        if (self.depth > 0) == (self.nodes > 0):
            raise ValueError(
                f"set exactly one of depth ({self.depth}) and nodes ({self.nodes}) above 0"
            )


@dataclass
class TrainConfig:
    epochs: int = opt(5, "passes over the training positions", ge=1)
    batch_size: int = opt(256, "positions per optimiser step", ge=1)
    lr: float = opt(1e-3, "AdamW peak learning rate (linear warm-up, cosine decay)", gt=0.0)
    weight_decay: float = opt(0.01, "AdamW weight decay", ge=0.0)
    warmup_steps: int = opt(30, "optimiser steps of linear learning-rate warm-up", ge=0)
    holdout_fraction: float = opt(
        0.05,
        "fraction of distinct positions held out (split by a "
        "hash of the position, so duplicates never straddle the "
        "split)",
        gt=0.0,
        lt=1.0,
    )
    threads: int = opt(0, "torch CPU threads (0 = torch's default)", ge=0)
    progress: bool = opt(True, "show a progress bar")


@dataclass
class CheckConfig:
    min_distinct: float = opt(
        0.8, "minimum fraction of generated positions that are distinct", ge=0.0, le=1.0
    )
    min_spread: float = opt(
        0.2,
        "minimum fraction of positions (with 2+ legal moves) whose "
        "target puts >= 5% of its mass off the best move (when multipv > 1)",
        ge=0.0,
        le=1.0,
    )
    max_flat: float = opt(
        0.5,
        "maximum fraction of positions whose multi-PV target is flat "
        "(all its moves within 0.02 probability of each other)",
        ge=0.0,
        le=1.0,
    )


@dataclass
class PretrainConfig:
    name: str = opt("pretrain", "name shown in the progress bar and stored in the checkpoint")
    seed: int = opt(
        0, "seed of position generation, the hold-out split, the init and the batch order"
    )
    device: str = opt("cpu", "'cpu', 'cuda' or 'auto'", choices=("cpu", "cuda", "auto"))
    output: str = opt(
        "runs/pretrain/pretrained.pt", "checkpoint to write ([policy] init_checkpoint accepts it)"
    )
    cache_dir: str = opt("runs/pretrain/cache", "directory of the labelled-position cache")
    policy: PolicyConfig = section(
        PolicyConfig, "the policy network (same keys as a training config)"
    )
    data: DataConfig = section(DataConfig, "position generation")
    labels: LabelConfig = section(LabelConfig, "Stockfish labels")
    train: TrainConfig = section(TrainConfig, "distillation training")
    checks: CheckConfig = section(CheckConfig, "label checks run before training")
    env: Any = None  # ChessOptions from the [env] section (engine path, engines, hash ...)


def load_pretrain_config(path: str | Path, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Load, override and validate a pretraining config. Raises UserError on any mistake."""
    return load_toml(path, overrides, pretrain_config_from_dict, "examples/pretrain.toml")


def pretrain_config_from_dict(data: dict, loc: Locator | None = None) -> PretrainConfig:
    loc = loc or Locator()
    env = table(data, "env", loc)
    if env.get("name", "chess") != "chess":
        raise UserError(
            f"{loc.where('env.name')}'env.name' = {env['name']!r}: pretraining is chess-only"
        )
    cfg = build(PretrainConfig, {k: v for k, v in data.items() if k != "env"}, loc=loc)
    cfg.env = build(ChessOptions, env, prefix="env", loc=loc, extra=("name",))
    _check_paths(cfg, loc)
    return cfg


def _check_paths(cfg: PretrainConfig, loc: Locator) -> None:
    """``output`` and ``cache_dir`` are checked before any labelling or training, so a bad
    path never costs the work: a file name (not a directory, not ``.json``, which is the
    summary's name), and directories that exist or can be made."""
    out = Path(cfg.output)
    if not cfg.output.strip() or out.is_dir():
        raise UserError(
            f"{loc.where('output')}output = {cfg.output!r}: give the checkpoint's file name, "
            "e.g. runs/pretrain/pretrained.pt"
        )
    if out.suffix == ".json":
        raise UserError(
            f"{loc.where('output')}output = {cfg.output!r}: the summary is written beside the "
            "checkpoint as <name>.json; give the checkpoint a .pt name"
        )
    for key, folder in (("output", out.parent), ("cache_dir", Path(cfg.cache_dir))):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise UserError(
                f"{loc.where(key)}{key} = {getattr(cfg, key)!r}: {existing} is a file, not a "
                "directory; choose another path"
            )
