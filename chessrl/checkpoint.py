"""Checkpoints: written atomically, the last k kept, everything needed to resume exactly.

A checkpoint is a file that people share, so loading one must never run code. Files hold
tensors and plain data only (dicts, lists, tuples, str, int, float, bool, None): :func:`write`
converts numpy values to those before saving, and :func:`load` reads with
``torch.load(weights_only=True)``, whose unpickler refuses every other Python object. A file
that asks for one (a pickled class, a ``__reduce__`` payload) is refused with one line.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chessrl.errors import UserError

PATTERN = re.compile(r"step_(\d+)\.pt$")


def plain(obj: Any) -> Any:
    """``obj`` with numpy arrays/scalars turned into tensors/Python numbers, recursively, so
    that it loads under ``weights_only=True``; anything else not plain data is a TypeError."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return plain(obj.item())
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, (torch.Tensor, torch.Size)):
        return obj
    # subclasses (an IntEnum, a str enum): their plain value (bool has none)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return "" + obj  # str(obj) of a str enum is its member name
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain(v) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(
        f"checkpoint state holds a {type(obj).__name__}; only tensors and plain data "
        "(dict, list, tuple, str, int, float, bool, None) can be saved"
    )


def write(path: Path, state: dict[str, Any]) -> Path:
    """Save ``state`` to ``path`` atomically: a uniquely named temp file in the same folder,
    then a rename; the temp file is removed if the write fails (e.g. a full disk). A failed
    write of the disk is an ``OSError`` naming ``path``, also where torch reports it as a
    RuntimeError of its zip writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(plain(state), fh)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp's file is private; a checkpoint is as shareable as any file
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc)
        if cause is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from exc
        raise
    return path


def policy_state(
    policy: torch.nn.Module, *, game: str, config: dict[str, Any], step: int = 0, **extra: Any
) -> dict[str, Any]:
    """The state of a checkpoint that holds ``policy``: the fields every chessrl checkpoint
    has, which :mod:`chessrl.player` (``chessrl eval``, ``play``, ``uci``) and
    ``[policy] init_checkpoint`` read, plus ``extra`` (a training run's optimiser and plugin
    state, a pretraining summary).

    ``policy``: the weights (on the CPU); ``policy_sizes``: what rebuilds the network;
    ``game``: the game's name; ``config``: the resolved config, whose ``env`` section (with
    ``name``) rebuilds the game; ``step``: the optimiser step (0 for a policy not trained by
    ``chessrl run``)."""
    weights = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
    return {
        "step": step,
        "policy": weights,
        "config": config,
        "game": game,
        "policy_sizes": dict(getattr(policy, "sizes", {})),
        **extra,
    }


def write_policy(
    path: Path,
    policy: torch.nn.Module,
    *,
    game: str,
    config: dict[str, Any],
    step: int = 0,
    **extra: Any,
) -> Path:
    """Write :func:`policy_state` to ``path`` atomically (:func:`write`)."""
    return write(path, policy_state(policy, game=game, config=config, step=step, **extra))


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc`` (itself, or one it was raised while handling), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def save(ckpt_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` to ``ckpt_dir/step_<step>.pt`` atomically; prune all but the last
    ``keep``."""
    path = write(ckpt_dir / f"step_{step:07d}.pt", state)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def save_initial(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``ckpt_dir/initial.pt``: the policy before its first update (never pruned)."""
    return write(ckpt_dir / "initial.pt", state)


def step_of(path: Path) -> int:
    """The step of a ``step_*.pt`` file, from its name (0 for another name, e.g. initial.pt)."""
    found = PATTERN.search(Path(path).name)
    return int(found.group(1)) if found else 0


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.exists():
        return []
    found = ((p, m) for p in ckpt_dir.iterdir() if (m := PATTERN.search(p.name)))
    return [p for p, _ in sorted(found, key=lambda pm: int(pm[1].group(1)))]


def latest(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def resolve(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a run directory's latest
    ``checkpoints/step_*.pt`` (or ``step_*.pt`` directly inside it); a UserError if none."""
    p = Path(path)
    if p.is_dir():
        found = latest(p / "checkpoints") or latest(p)
        if found is None:
            raise UserError(
                f"{path}: no checkpoint found (expected step_*.pt or checkpoints/step_*.pt)"
            )
        return found
    if not p.exists():
        raise UserError(f"{path}: no such checkpoint file or run directory")
    return p


def load(path: str | Path) -> dict[str, Any]:
    """The state saved at ``path`` (a file, or a run directory: its latest step checkpoint).

    Never executes code from the file: see the module docstring. Every failure is one
    :class:`UserError` line naming the file.
    """
    p = resolve(path)
    try:
        with warnings.catch_warnings():  # e.g. torch's note on old pickle protocols: one line
            warnings.simplefilter("ignore")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a file can be bad is the user's to fix
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:  # the unpickler met a callable
            raise UserError(
                f"{p}: refused: the file holds Python objects beyond tensors and "
                "plain data (loading it could run code); chessrl checkpoints never do, "
                "so it was not made by chessrl or was tampered with"
            ) from None
        raise UserError(
            f"{p}: damaged or not a checkpoint ({_why_unreadable(exc)}); use another "
            "checkpoint (a run's checkpoints/ folder keeps the previous ones)"
        ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"{p}: not a chessrl checkpoint (holds a {type(state).__name__}, not a dict)"
        )
    _check_layout(state, p)
    return state


def _why_unreadable(exc: BaseException) -> str:
    """A short reason a file could not be read as a checkpoint."""
    text = str(exc).strip()
    if isinstance(exc, EOFError) or not text:
        return "the file is empty or cut short"
    if "central directory" in text or "zip archive" in text:
        return "cut short or not a torch.save file"
    if "Weights only load failed" in text or "Unsupported operand" in text:
        return "not a torch.save file, or damaged"
    if isinstance(exc, OSError):
        return f"cannot read it: {exc.strerror or text.splitlines()[0]}"
    return f"unreadable: {text.splitlines()[0][:80]}"


#: what each key of a chessrl checkpoint holds, where present (a policy-only file has others)
_LAYOUT: dict[str, tuple[type, ...]] = {
    "game": (str,),
    "config": (dict,),
    "policy": (dict,),
    "policy_sizes": (dict,),
    "optimizer": (dict,),
    "old_policy": (dict, type(None)),
    "ref_policy": (dict, type(None)),
    "coefficients": (dict,),
    "plugins": (dict,),
    "step": (int,),
    "skipped_steps": (int,),
    "consecutive_skips": (int,),
    "last_sync": (int,),
    "world_size": (int,),
}


def _check_layout(state: dict[str, Any], p: Path) -> None:
    """A :class:`UserError` for a checkpoint whose keys hold the wrong kind of value (a
    crafted or damaged file), before any of it is used."""
    config = state.get("config")
    nested = (
        {f"config.{k}": config.get(k) for k in ("env", "policy")}
        if isinstance(config, dict)
        else {}
    )
    for key, value in [*state.items(), *nested.items()]:
        kinds = _LAYOUT.get(key, (dict, type(None)) if key.startswith("config.") else None)
        if kinds is None:
            continue
        bad = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        if not bad and key == "policy_sizes":
            bad = not all(isinstance(v, (int, str)) for v in value.values())
        if bad:
            raise UserError(
                f"{p}: not a valid chessrl checkpoint: '{key}' holds "
                f"{type(value).__name__} {str(value)[:40]!r}; the file was not written by chessrl "
                "or was damaged: use another checkpoint"
            )


def load_policy_weights(policy: torch.nn.Module, path: str | Path) -> None:
    """Load the policy weights of a checkpoint into ``policy`` (sizes must match)."""
    state = load(path)
    weights = state.get("policy", state)
    try:
        policy.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        recorded = state.get("policy_sizes")
        saved: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
        sizes = getattr(getattr(policy, "module", policy), "sizes", None) or {}
        diff = [
            f"{k} {saved[k]!r} -> {sizes.get(k)!r}"
            for k in sorted(saved)
            if saved[k] != sizes.get(k)
        ]
        if diff:
            game = (
                "; obs_vocab comes from the game's [env] options (e.g. an observation encoding)"
                if any(d.startswith("obs_") for d in diff)
                else ""
            )
            raise UserError(
                f"{path}: the checkpoint's policy differs from the configured one "
                f"(checkpoint -> config: {', '.join(diff)}){game}; configure the checkpoint's "
                "[policy] sizes and [env] options"
            ) from None
        raise UserError(
            f"{path}: weights do not fit the configured policy ({first}); "
            "match [policy] sizes to the checkpoint"
        ) from None
