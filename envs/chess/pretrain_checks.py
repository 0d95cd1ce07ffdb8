"""Label checks run before pretraining: distinct positions, legal labels, target spread.

A failed check stops the run with one :class:`UserError` naming every failed check and the
setting that fixes it (docs/pretraining.md, "Label checks")."""

from __future__ import annotations

import chess
import numpy as np

from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.pretrain_config import PretrainConfig
from chessrl.envs.chess.pretrain_data import epd_key, soft_targets
from chessrl.errors import UserError


def _illegal_labels(data: dict[str, np.ndarray], mask: np.ndarray) -> tuple[int, int]:
    """(label moves that are illegal or outside the legal mask, label moves)."""
    illegal = labelled = 0
    for i, fen in enumerate(data["fen"]):
        board = chess.Board(fen)
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
    return illegal, labelled


def label_stats(cfg: PretrainConfig, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Distinct fraction, illegal and missing labels, spread and flatness of the targets."""
    n = len(data["fen"])
    distinct = len({epd_key(f) for f in data["fen"]}) / max(n, 1)
    mask = np.unpackbits(data["mask"], axis=1, count=enc.N_ACTIONS).astype(bool)
    illegal, labelled = _illegal_labels(data, mask)
    no_label = int((data["uci"][:, 0] == "").sum())
    lab = cfg.labels
    probs = soft_targets(data["cp"], data["actions"], lab.temperature_cp, lab.best_weight)
    soft_only = soft_targets(data["cp"], data["actions"], lab.temperature_cp, 0.0)
    valid = data["actions"] >= 0
    k = valid.sum(axis=1)
    multi = mask.sum(axis=1) >= 2
    spread = float((probs[multi].max(axis=1) <= 0.95).mean()) if multi.any() else 0.0
    with np.errstate(invalid="ignore"):
        hi = np.where(valid, soft_only, -np.inf).max(axis=1)
        lo = np.where(valid, soft_only, np.inf).min(axis=1)
    flat = float(((k >= 2) & (hi - lo < 0.02)).sum() / max(int((k >= 2).sum()), 1))
    return {
        "positions": n,
        "distinct_fraction": distinct,
        "illegal_labels": illegal,
        "labels": labelled,
        "unlabelled_positions": no_label,
        "spread_fraction": spread,
        "flat_fraction": flat,
        "mean_pv_moves": float(k.mean()) if n else 0.0,
        "mean_target_max": float(probs.max(axis=1).mean()) if n else 0.0,
    }


def check_labels(cfg: PretrainConfig, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Label statistics; a :class:`UserError` listing every failed check."""
    stats = label_stats(cfg, data)
    distinct, spread, flat = (
        stats[k] for k in ("distinct_fraction", "spread_fraction", "flat_fraction")
    )
    illegal, no_label = stats["illegal_labels"], stats["unlabelled_positions"]
    c, multipv = cfg.checks, cfg.labels.multipv
    failed = []
    if distinct < c.min_distinct:
        failed.append(
            f"distinct positions {distinct:.3f} < {c.min_distinct} ([checks] "
            "min_distinct; widen [data] opening_plies or raise selfplay_fraction)"
        )
    if illegal or no_label:
        failed.append(
            f"{illegal} of {stats['labels']} label moves are illegal and {no_label} "
            "positions have no label (a corrupt cache or a broken engine; delete the "
            "cache directory)"
        )
    if multipv > 1 and spread < c.min_spread:
        failed.append(
            f"multi-PV spread {spread:.3f} < {c.min_spread} ([checks] min_spread; the "
            "targets are almost one-hot: raise [labels] temperature_cp or lower "
            "best_weight)"
        )
    if multipv > 1 and flat > c.max_flat:
        failed.append(
            f"flat multi-PV targets {flat:.3f} > {c.max_flat} ([checks] max_flat; "
            "lower [labels] temperature_cp)"
        )
    if failed:
        raise UserError("label checks failed: " + "; ".join(failed))
    return stats
