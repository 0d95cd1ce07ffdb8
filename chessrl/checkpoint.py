"""Checkpoints: written atomically, the last k kept, everything needed to resume exactly."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from chessrl.errors import UserError

PATTERN = re.compile(r"step_(\d+)\.pt$")


def save(ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` to ``ckpt_dir/step_<step>.pt`` via a temp file and rename; prune old ones."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step_{step:07d}.pt"
    tmp = ckpt_dir / f".step_{step:07d}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def save_initial(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``ckpt_dir/initial.pt``: the policy before its first update (never pruned)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = ckpt_dir / "initial.pt", ckpt_dir / ".initial.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.exists():
        return []
    return sorted((p for p in ckpt_dir.iterdir() if PATTERN.search(p.name)),
                  key=lambda p: int(PATTERN.search(p.name).group(1)))


def latest(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        found = latest(p / "checkpoints") or latest(p)
        if found is None:
            raise UserError(f"{path}: no checkpoint found (expected step_*.pt or checkpoints/step_*.pt)")
        p = found
    if not p.exists():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable chessrl checkpoint ({type(exc).__name__}: {exc})") from None


def load_policy_weights(policy: torch.nn.Module, path: str | Path) -> None:
    """Load the policy weights of a checkpoint into ``policy`` (sizes must match)."""
    state = load(path)
    weights = state.get("policy", state)
    try:
        policy.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: weights do not fit the configured policy ({first}); "
                        "match [policy] sizes to the checkpoint") from None
