"""``chessrl pretrain CONFIG``: pretrain the chess policy by Stockfish distillation.

Pipeline (docs/pretraining.md), one module per stage:

1. **Generate** positions shard by shard and 2. **label** them with Stockfish's multi-PV best
   moves, cached per shard (:mod:`~chessrl.envs.chess.pretrain_data`);
3. **check** the labels, stopping with one :class:`UserError` naming each failed check
   (:mod:`~chessrl.envs.chess.pretrain_checks`);
4. **train** the policy (the core's builder) with cross-entropy against soft targets, report
   held-out agreement with Stockfish, and save a checkpoint with the core's writer that
   ``[policy] init_checkpoint`` and ``chessrl eval`` accept
   (:mod:`~chessrl.envs.chess.pretrain_train`).

The config (:mod:`~chessrl.envs.chess.pretrain_config`) is declared and loaded like a training
config. No global random generator is seeded or drawn from.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import torch

from chessrl.envs.chess.pretrain_checks import check_labels
from chessrl.envs.chess.pretrain_config import (
    CheckConfig,
    DataConfig,
    LabelConfig,
    PretrainConfig,
    TrainConfig,
    load_pretrain_config,
    pretrain_config_from_dict,
)
from chessrl.envs.chess.pretrain_data import Labeller, cache_key, labelled_data, soft_targets
from chessrl.envs.chess.pretrain_train import initial_path, save_checkpoint, train_policy

__all__ = [
    "CheckConfig",
    "DataConfig",
    "LabelConfig",
    "Labeller",
    "PretrainConfig",
    "TrainConfig",
    "cache_key",
    "check_labels",
    "cmd_pretrain",
    "initial_path",
    "labelled_data",
    "load_pretrain_config",
    "pretrain",
    "pretrain_config_from_dict",
    "save_checkpoint",
    "soft_targets",
    "train_policy",
]


def pretrain(
    cfg: PretrainConfig, log: Callable[[str], None] = print, labeller: Labeller | None = None
) -> dict[str, Any]:
    """The whole pipeline; returns the summary (also written next to the checkpoint as JSON)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    t0 = time.perf_counter()
    data, cache = labelled_data(cfg, log, labeller)
    log(
        f"labels: {len(data['fen'])} positions in {cache['cache']} ({cache['shards_loaded']} "
        f"shards from the cache, {cache['shards_generated']} generated, "
        f"{cache['engine_searches']} engine searches)"
    )
    checks = check_labels(cfg, data)
    log(
        f"label checks passed: distinct {checks['distinct_fraction']:.3f}, spread "
        f"{checks['spread_fraction']:.3f}, flat {checks['flat_fraction']:.3f}, "
        f"{checks['mean_pv_moves']:.2f} PV moves per position"
    )
    t1 = time.perf_counter()
    policy, summary = train_policy(cfg, data, log)
    summary.update(
        cache=cache, checks=checks, label_seconds=t1 - t0, train_seconds=time.perf_counter() - t1
    )
    out = save_checkpoint(cfg, policy, summary)
    h, r = summary["heldout"], summary["random"]
    log(
        f"saved {out}: hold-out top-1 {h['top1']:.3f} [95% CI {h['top1_lo']:.3f}, "
        f"{h['top1_hi']:.3f}] (random {r['top1']:.3f}), top-5 {h['top5']:.3f} "
        f"[{h['top5_lo']:.3f}, {h['top5_hi']:.3f}] (random {r['top5']:.3f}), "
        f"loss {h['loss']:.3f} (random {r['loss']:.3f})"
    )
    summary["output"] = str(out)
    return summary


def cmd_pretrain(args) -> int:
    cfg = load_pretrain_config(args.config, args.overrides)
    if args.no_progress:
        cfg.train.progress = False
    try:
        pretrain(cfg)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the labelled shards stay in the cache
        print(
            f"chessrl: interrupted; the labelled shards in {cfg.cache_dir} are kept, so the "
            f"same command continues from them: chessrl pretrain {args.config}",
            file=sys.stderr,
        )
        return getattr(exc, "exit_code", 130)
    return 0
