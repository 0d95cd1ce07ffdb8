"""The run directory as a unit: who may write it (a lock), what a resume may change, and
which checkpoint a resume starts from. docs/reliability.md lists what each promises.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterable

from chessrl import checkpoint, pluginmanager
from chessrl.config import Config, config_to_dict, dumps_toml
from chessrl.errors import UserError
from chessrl.schema import describe, suggest

LOCK_FILE = ".lock"

# Keys a resumed run may take a new value for with --allow-change: they change how long the
# run goes, what it measures and logs, or the step size, never what a step computes from the
# data (the game, the rollout shape, the loss, the model, the plugins, the seed).
SAFE_CHANGES = (
    "trainer.steps",
    "trainer.lr",
    "trainer.grad_clip",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.eval_every",
    "trainer.eval_games",
    "trainer.eval_initial",
    "trainer.budget_every",
    "trainer.health_window",
    "trainer.max_consecutive_skips",
    "logging.wandb",
    "logging.project",
    "logging.progress",
    "logging.entity",
    "logging.group",
    "logging.tags",
    "logging.wandb_report",
    "logging.wandb_checkpoint",
)


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as one process trains there.

    The kernel drops the lock when the process ends, however it ends (SIGKILL included), so a
    lock left by a dead process never blocks; the file itself stays and holds the last pid.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by engine processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.path.parent} is in use by another chessrl run (pid {holder}, holding "
                f"{self.path}); wait for it to finish or stop it, then --resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def last_logged_step(run_dir: Path) -> int | None:
    """The last step ``metrics.jsonl`` holds a row for: 0 for a file without rows, None
    without a readable file."""
    from chessrl.metrics import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    try:
        rows = read_metrics(path)
    except OSError:
        return None
    return max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=0)


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resume starts from: the latest step checkpoint whose step
    ``metrics.jsonl`` has logged, else ``initial.pt`` (a run that stopped before its first
    step checkpoint), else None (nothing was saved).

    The trainer logs a step's row before it saves the step's checkpoint, so the latest
    checkpoint's row is there unless the file lost its end (a power cut before the page cache
    reached the disk cuts its last line): resuming past the last row would leave the lost
    steps out of the record for good, so the run resumes from a checkpoint at or before it
    and replays them (a resume replays exactly).
    """
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = checkpoint.list_checkpoints(ckpt_dir)
    logged = last_logged_step(run_dir) if found else None
    if logged is not None:
        found = [c for c in found if checkpoint.step_of(c) <= logged]
    if found:
        return found[-1]
    initial = ckpt_dir / "initial.pt"
    return initial if initial.exists() else None


def holds_a_run(run_dir: Path) -> bool:
    """Whether a fresh start in ``run_dir`` would overwrite a run: a checkpoint or a metric row."""
    metrics = Path(run_dir) / "metrics.jsonl"
    return resume_checkpoint(run_dir) is not None or (
        metrics.exists() and metrics.stat().st_size > 0
    )


def write_text(path: Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` (or bytes) atomically (a temp file, then a rename): a
    full disk leaves the old file and no temp file, never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the config from the rest of a team
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(
    run_dir: Path, cfg: Config, allow: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``[(key, stored, new)]``: how ``cfg`` differs from ``RUN_DIR/config.toml``, the truth of a
    resumed run. Raises :class:`UserError` for a change that ``allow`` does not name, for a
    key in ``allow`` that is not a safe change, and for a different game (never allowed)."""
    allow = list(allow)
    for key in allow:
        if key not in SAFE_CHANGES:
            raise UserError(
                f"--allow-change {key}: not a change a resumed run can take"
                f"{suggest(key, SAFE_CHANGES)} "
                f"(safe: {', '.join(SAFE_CHANGES)}); start a new run to change anything else"
            )
    path = Path(run_dir) / "config.toml"
    try:
        stored = _flat(tomllib.loads(path.read_text()))
    except FileNotFoundError:
        raise UserError(
            f"{path}: missing, so the run cannot be checked for a changed config; "
            "restore it from the run's checkpoint or start a new run"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(
            f"{path}: unreadable ({type(exc).__name__}: {exc}); restore it or start a new run"
        ) from None
    new = _flat(
        tomllib.loads(dumps_toml(config_to_dict(cfg)))
    )  # the same TOML round trip as the stored file
    for key, value in _defaults(cfg).items():  # a field added since the run started, at its default
        if key not in stored and new.get(key) == value:
            stored[key] = value
    if stored.get("env.name") != new.get("env.name"):
        raise UserError(
            f"{run_dir} holds a {stored.get('env.name')!r} run "
            f"and this config plays {new.get('env.name')!r}: "
            "a resumed run cannot change its game; start a new run directory"
        )
    changes = [
        (k, stored.get(k), new.get(k))
        for k in sorted(set(stored) | set(new))
        if stored.get(k) != new.get(k)
    ]
    refused = [c for c in changes if c[0] not in allow]
    if refused:
        listed = ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, a, b in refused)
        safe = [k for k, _, _ in refused if k in SAFE_CHANGES]
        how = (
            f"; to take the new value, add {' '.join('--allow-change ' + k for k in safe)}"
            if safe
            else ""
        )
        raise UserError(
            f"--resume: the config differs from {path} in {listed}; resume with the stored config "
            f"(chessrl run {path} --resume --run-dir {run_dir}){how}"
        )
    return changes


def _defaults(cfg: Config) -> dict[str, Any]:
    """Every field's default, by dotted key, as the stored TOML would hold it."""
    rows = [
        (r["key"], r["default"])
        for r in describe(Config)
        if not r["key"].startswith(("env.", "plugins"))
    ]
    games, regs = pluginmanager.games(), pluginmanager.regularisers()
    if cfg.env.name in games:
        rows += [(f"env.{r['key']}", r["default"]) for r in describe(games[cfg.env.name].schema)]
    for name in cfg.plugins:
        rows += [
            (f"plugins.{name}.{r['key']}", r["default"]) for r in describe(regs[name].obj.Config)
        ]
    return {k: tomllib.loads(dumps_toml({"v": v})).get("v") for k, v in rows}


def _show(v: Any) -> str:
    return "unset" if v is None else repr(v)


def lock(run_dir: Path, resume: bool) -> tuple[RunLock, bool]:
    """Create ``run_dir`` if needed and lock it; ``(lock, created)``. A directory that cannot
    be created or locked is a :class:`UserError` (and one this call created is removed)."""
    if resume and not run_dir.is_dir():
        raise UserError(f"--resume: {run_dir}: no such run directory")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        held = RunLock(run_dir)
        held.acquire()
    except OSError as exc:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise UserError(
            f"{run_dir}: cannot use it as the run directory ({exc.strerror or exc}); "
            "choose a writable --run-dir"
        ) from None
    return held, created


def check_start(
    run_dir: Path, cfg: Config, resume: bool, allow_change: Iterable[str] = ()
) -> tuple[Path | None, list[tuple[str, Any, Any]]]:
    """Whether ``cfg`` may start (or, with ``resume``, continue) the run in ``run_dir``:
    ``(the checkpoint to resume from or None, the config changes --allow-change allowed)``.
    A new run in a directory that holds one, a resume of nothing, or a change that is not
    allowed is a :class:`UserError`."""
    start_from = resume_checkpoint(run_dir)
    if resume:
        if start_from is None and not (run_dir / "config.toml").exists():
            raise UserError(
                f"--resume: {run_dir} holds no run (no checkpoint, no config.toml); "
                "start without --resume"
            )
        return start_from, config_changes(run_dir, cfg, allow_change)
    if allow_change:
        raise UserError("--allow-change works with --resume only: a new run takes any config")
    if holds_a_run(run_dir):
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another "
            f"--run-dir"
        )
    return start_from, []
