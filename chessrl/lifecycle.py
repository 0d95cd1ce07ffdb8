"""What surrounds a training run's steps: signals (finish the step, checkpoint, exit), the
run's log file, the one line for a failure the run cannot go on from, and the wandb
artifacts written at the end. docs/reliability.md lists what each fault leaves behind.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any, Callable

from chessrl import distributed, rundir
from chessrl.config import Config
from chessrl.errors import EngineFailure, Interrupted, RunFailure, first_line
from chessrl.metrics import MetricsLogger

# an OSError with one of these is the disk's fault, not the program's: the run stops with
# one line that says how to continue
DISK_ERRNOS = (
    errno.ENOSPC,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EIO,
)


class GracefulStop:
    """First SIGINT (Ctrl-C) or SIGTERM: finish the current step, checkpoint, exit with 130 or
    143. A second signal aborts at once (engines are still closed; no new checkpoint)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, log: Callable[[str], None]) -> None:
        self.requested = False
        self.exit_code = 130
        self.log = log
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise Interrupted(128 + signum)
        self.requested = True
        self.exit_code = 128 + signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"{name}: finishing this step, then saving a checkpoint ({name} again to abort)")

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def tee(logfile: IO[str] | None, say: Callable[[str], None]) -> Callable[[str], None]:
    """A log function that writes each line to ``logfile`` (train.log) and says it; a file
    that can no longer be written (a full disk) is dropped with one line saying so."""

    def log(line: str) -> None:
        nonlocal logfile
        if logfile is not None:
            try:
                logfile.write(line + "\n")
                logfile.flush()
            except OSError as exc:  # a full disk must not hide the line itself
                say(
                    f"(train.log: cannot write: {exc.strerror or exc}; lines go to the terminal "
                    f"only)"
                )
                logfile = None
        say(line)

    return log


def quietly(close: Callable[[], None]) -> None:
    """Call ``close``, ignoring an OSError: a full disk fails the flush of a file being
    closed, and the run has already said why."""
    try:
        close()
    except OSError:
        pass


def as_run_failure(exc: BaseException, run_dir: Path, last_saved: int) -> RunFailure | None:
    """The one line for a run that cannot go on (a disk or an engine failure), else None."""
    resume = f"the last checkpoint is step {last_saved}: continue with --resume --run-dir {run_dir}"
    if isinstance(exc, RunFailure):
        return exc
    if isinstance(exc, EngineFailure):
        return RunFailure(f"the game's engine failed: {exc}; {resume} once the engine works")
    if distributed.peer_lost(exc):
        return RunFailure(
            f"another process of the run stopped ({first_line(exc, 160)}); {resume} with the "
            "same torchrun command"
        )
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return RunFailure(
            f"cannot write {exc.filename or run_dir}: {exc.strerror}; free space or make it "
            f"writable; {resume}"
        )
    return None


def upload_artifacts(logger: MetricsLogger, cfg: Config, run_dir: Path) -> None:
    """With wandb on: the run's report (``logging.wandb_report``) and the latest checkpoint
    (``logging.wandb_checkpoint``) as artifacts. Never fails the run."""
    if logger.run is None:
        return
    if cfg.logging.wandb_report:
        try:
            from chessrl.report import write_report

            files = write_report(run_dir)
            logger.upload(
                f"report-{logger.run.id}",
                "report",
                files,
                "chessrl report of " + run_dir.name,
                base=run_dir,
            )
        except Exception as exc:
            print(
                f"wandb: the report was not uploaded ({type(exc).__name__}: {exc})", file=sys.stderr
            )
    if cfg.logging.wandb_checkpoint:
        latest = rundir.resume_checkpoint(run_dir)
        if latest is not None:
            logger.upload(
                f"model-{logger.run.id}", "model", [latest], f"{run_dir.name} {latest.name}"
            )
