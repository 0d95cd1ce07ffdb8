"""The loop: :func:`train` runs a config's steps in a run directory, with checkpoints, resume,
evaluation, Ctrl-C and the run's logs. The algorithm is :func:`chessrl.step.grpo_step`;
building a run is :mod:`chessrl.run`; what surrounds the steps (signals, train.log, failure
lines, wandb artifacts) is :mod:`chessrl.lifecycle`. The names that lived here before the
split (``grpo_step``, ``build_run``, ``Run``, ...) are re-exported.
"""

from __future__ import annotations

import datetime as _dt
import gc
import math
import shutil
from pathlib import Path
from typing import IO, Any, Callable

from chessrl import checkpoint, distributed, rundir
from chessrl import keys as K
from chessrl.config import Config, TrainerConfig, config_to_dict, dumps_toml
from chessrl.errors import Interrupted, NonFinite, RunFailure, UserError
from chessrl.evaluate import eval_line, run_eval  # noqa: F401 - eval_line re-exported
from chessrl.lifecycle import GracefulStop, as_run_failure, quietly, tee, upload_artifacts
from chessrl.metrics import MetricsLogger, read_metrics
from chessrl.metrics import row as metrics_row
from chessrl.progress import Progress
from chessrl.progress import echo as echo_above_bar
from chessrl.run import (  # noqa: F401 - re-exported: chessrl.trainer's names before the split
    Run,
    build_run,
    derived_seed,
    load_state,
    make_game,
    nonfinite_tensors,
    rank_seed,
    resolve_device,
    save_checkpoint,
    state_dict,
)
from chessrl.step import (  # noqa: F401 - re-exported, and grpo_step is looked up here per step
    grpo_step,
    loss_terms,
    optimizer_step,
)


def lr_at(trainer: TrainerConfig, step: int) -> float:
    """The learning rate of ``step`` (1-based) under ``trainer.lr_schedule``: ``lr`` throughout,
    or a half cosine from ``lr`` at step 1 to ``lr * lr_final`` at step ``trainer.steps`` (and
    after it, for steps past the config's end)."""
    if trainer.lr_schedule == "constant":
        return trainer.lr
    frac = min(max(step - 1, 0) / max(trainer.steps - 1, 1), 1.0)
    scale = trainer.lr_final + (1.0 - trainer.lr_final) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return trainer.lr * scale


def new_run_dir(cfg: Config, root: Path = Path("runs")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{cfg.name}-{stamp}"


def train(
    cfg: Config,
    run_dir: Path,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
    allow_change: tuple[str, ...] | list[str] = (),
) -> Path:
    """Train ``cfg`` in ``run_dir`` (resuming from its latest checkpoint if asked); return run_dir.

    ``run_dir`` is locked for the whole call. On ``resume`` the stored config.toml is the
    truth: ``cfg`` may differ from it only in the keys ``allow_change`` names
    (:data:`chessrl.rundir.SAFE_CHANGES`). What every fault leaves behind is listed in
    docs/reliability.md. Under torchrun every rank calls this; rank 0's ``run_dir`` wins and
    rank 0 alone writes.
    """
    if max_steps is not None and max_steps < 0:
        raise UserError(f"max_steps = {max_steps}: the steps to run must be >= 0")
    dist = distributed.init(resolve_device(cfg.device))
    run_dir = Path(distributed.broadcast(dist, str(run_dir)))
    say = echo or echo_above_bar  # stderr; on a terminal, above the progress bar
    loop = _open(cfg, run_dir, dist, say, resume, allow_change)
    try:
        start = loop.start()
        end = cfg.trainer.steps if max_steps is None else min(cfg.trainer.steps, start + max_steps)
        if dist.main and (cfg.logging.progress if progress is None else progress):
            loop.bar = Progress(cfg.name, end, start)  # a bar on a terminal, lines elsewhere
        for step in range(start + 1, end + 1):
            if loop.step_once(step, end):
                break
        loop.finish()
    except BaseException as exc:
        loop.fail(exc)
    finally:
        loop.close()
    return run_dir


def _open(
    cfg: Config,
    run_dir: Path,
    dist: distributed.Dist,
    say: Callable[[str], None],
    resume: bool,
    allow_change: tuple[str, ...] | list[str],
) -> _Loop:
    """Lock ``run_dir``, check that the call fits what it holds, build the run. Nothing is
    written before the run is built (e.g. a missing engine fails first); on a failure the lock
    is released and a directory this call created is removed."""

    def log(line: str) -> None:
        if dist.main:
            say(line)

    lock, created, refused = None, False, None
    # what a fresh run's directory held before this call: a configuration error found before
    # the first step (a plugin's train_start check) removes what the call wrote
    try:
        existed = {entry.name for entry in run_dir.iterdir()} if run_dir.is_dir() else set()
    except OSError:  # unreadable: rundir.lock says so in one line
        existed = set()
    try:
        if dist.main:
            try:
                lock, created = rundir.lock(run_dir, resume)
            except UserError as exc:
                refused = str(exc)
        refused = distributed.broadcast(dist, refused)  # every rank stops, not rank 0 alone
        if refused:
            raise UserError(refused)
        start_from, changes = rundir.check_start(run_dir, cfg, resume, allow_change)
        log(
            f"{cfg.name}: building the run in {run_dir} (the {cfg.env.name} game and its "
            f"engines, the policy, {len(cfg.plugins)} plugin(s))"
        )
        run = build_run(cfg, run_dir, log, dist)
    except BaseException:
        if lock is not None:
            lock.release()
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)  # it holds nothing but the lock
        raise
    loop = _Loop(cfg, run, run_dir, dist, say, log, lock, resume, start_from, changes)
    loop.existed = None if created else existed
    return loop


class _Loop:
    """One call of :func:`train`: the run, its files (train.log, metrics, checkpoints) and
    what the loop carries from step to step (the last checkpoint, the health rules, signals).
    Rank 0 alone writes; every rank steps."""

    def __init__(
        self,
        cfg: Config,
        run: Run,
        run_dir: Path,
        dist: distributed.Dist,
        say: Callable[[str], None],
        log: Callable[[str], None],
        lock: rundir.RunLock | None,
        resume: bool,
        start_from: Path | None,
        changes: list[tuple[str, Any, Any]],
    ) -> None:
        from chessrl.health import HealthMonitor

        self.cfg, self.run, self.run_dir, self.dist = cfg, run, run_dir, dist
        self.ckpt_dir = run_dir / "checkpoints"
        self.say, self.log, self.lock = say, log, lock
        self.resume, self.start_from, self.changes = resume, start_from, changes
        self.logger: MetricsLogger | None = None
        self.bar: Progress | None = None
        self.logfile: IO[str] | None = None
        self.step = self.last_saved = 0
        self.health = HealthMonitor(window=cfg.trainer.health_window)
        self.stop = GracefulStop(log)  # SIGINT / SIGTERM: finish the step, checkpoint, exit
        self.existed: set[str] | None = None  # the directory's entries before (None: created)
        self.begun = False  # the plugins accepted the run (train_start returned)
        self.undo = False  # remove what this call wrote (a user's mistake before step 1)

    # -- before the first step -------------------------------------------------------------

    def start(self) -> int:
        """Write config.toml, open train.log, load the resume checkpoint, write the initial
        checkpoint, open the metrics, replay them into the health rules, start the plugins
        and evaluate the initial policy; return the step the loop starts after."""
        cfg, run, dist = self.cfg, self.run, self.dist
        # the checkpoint first: one that does not fit is refused before config.toml changes
        start, said = self._resume()
        if dist.main:
            rundir.write_text(self.run_dir / "config.toml", dumps_toml(config_to_dict(cfg)))
            self.logfile = open(self.run_dir / "train.log", "a")
            run.log = self.log = self.stop.log = tee(self.logfile, self.say)
        for line in said:
            self.log(line)
        self.step = self.last_saved = start
        kept: list[dict[str, Any]] = []
        if dist.main:
            if not (self.ckpt_dir / "initial.pt").exists():  # the state before any update
                why = save_checkpoint(run, self.ckpt_dir, 0, initial=True)
                if why is not None:
                    raise RunFailure(
                        f"the initial policy is unusable: {why}; check policy.init_checkpoint"
                    )
            self.logger = MetricsLogger(
                self.run_dir,
                wandb=cfg.logging.wandb,
                project=cfg.logging.project,
                name=self.run_dir.name,
                config=config_to_dict(cfg),
                resume_step=start if self.resume else None,
                entity=cfg.logging.entity,
                group=cfg.logging.group,
                tags=cfg.logging.tags,
            )
            if self.logger.where:
                self.log(self.logger.where)
            kept = read_metrics(self.run_dir / "metrics.jsonl")
            for row in kept:  # findings already reported stay quiet
                self.health.update(row)
        run.plugins.train_start(run.view(start))
        self.begun = True
        if (
            dist.main
            and start == 0
            and cfg.trainer.eval_every
            and cfg.trainer.eval_initial
            and not any(r["step"] == 0 for r in kept)
        ):
            self.record(metrics_row(0, self.evaluate(0)))  # the baseline of every later eval
        return start

    def _resume(self) -> tuple[int, list[str]]:
        """With ``--resume``: load the latest checkpoint and take the config's learning rate;
        ``(the step it holds (0 for a new run), the lines that say what was resumed and what
        changed)``. Writes nothing, so a refused checkpoint leaves the run as it was."""
        if not self.resume:
            return 0, []
        start, said = 0, []
        if self.start_from is not None:
            try:
                state = checkpoint.load(self.start_from)
            except UserError as exc:  # say how to resume from the checkpoint before it
                if self.start_from.name == "initial.pt":  # there is none before it
                    raise
                step = checkpoint.step_of(self.start_from)
                older = [
                    c
                    for c in checkpoint.list_checkpoints(self.ckpt_dir)
                    if checkpoint.step_of(c) < step
                ]
                before = older[-1].name if older else "initial.pt"
                raise UserError(
                    f"{exc}; to resume from the one before it ({before}), move it aside: "
                    f"mv {self.start_from} {self.start_from}.bad"
                ) from None
            start = load_state(self.run, state, self.start_from)
            said.append(f"resumed from step {start} ({self.start_from.relative_to(self.run_dir)})")
            newest = checkpoint.latest(self.ckpt_dir)
            if newest is not None and checkpoint.step_of(newest) > start:
                said.append(
                    f"resume: metrics.jsonl ends at step {rundir.last_logged_step(self.run_dir)} "
                    f"(its end was lost), before the newest checkpoint {newest.name}: the steps "
                    f"after {start} are replayed so the record has no gap"
                )
        else:
            said.append("resume: the run saved no checkpoint yet; starting it from step 0")
        for key, old, new in self.changes:
            said.append(f"resume: {key} changed from {old!r} to {new!r} (--allow-change {key})")
        for group in self.run.optimizer.param_groups:  # unless --allow-change trainer.lr: same
            group["lr"] = self.cfg.trainer.lr
        return start, said

    # -- each step -------------------------------------------------------------------------

    def record(self, row: dict[str, Any]) -> None:
        """Rank 0: the metrics stream, then the health rules (a finding is said and logged)."""
        assert self.logger is not None
        self.logger.log(row)
        for finding in self.health.update(row):
            self.log(finding.line())
            self.logger.finding(finding.code, finding.severity, finding.line(), finding.subject)

    def evaluate(self, step: int) -> dict[str, float]:
        """The evaluation at ``step``; the opponents' generators derive from (seed, step)."""
        self.run.game.reseed(derived_seed(self.cfg.seed, 0, step, 2))
        if step == 0:
            self.log(
                "evaluating the initial policy (step 0): the baseline of every later evaluation"
            )
        else:
            self.log(
                f"evaluating step {step} ({self.cfg.trainer.eval_games} games per evaluation "
                f"opponent)"
            )
        out = run_eval(self.run, step)
        self.log(eval_line(step, out))
        return out

    def step_once(self, step: int, end: int) -> bool:
        """Run, evaluate, record and checkpoint ``step``; whether the loop stops after it.
        Raises :class:`RunFailure` when too many steps in a row were skipped."""
        self.step = step
        run = self.run
        row = self._row(step)
        diverged = self._diverged(step)
        interrupted = distributed.any_true(self.dist, self.stop.requested)
        if interrupted and self.dist.enabled:  # every rank exits with the signal's code
            self.stop.exit_code = distributed.max_int(
                self.dist, self.stop.exit_code if self.stop.requested else 0
            )
        if self.dist.main:
            self.record(row)
            if self.bar is not None:
                self.bar.update(
                    step,
                    ret=f"{row.get('rollout/return_mean', float('nan')):+.3f}",
                    H=f"{row.get('train/entropy', 0):.2f}",
                    clip=f"{row.get('train/clip_fraction', 0):.2f}",
                )
            due = step % self.cfg.trainer.checkpoint_every == 0 or step == end
            if diverged is None and (due or run.stop_reason or interrupted):
                self._checkpoint(step)
        if diverged is not None:
            raise RunFailure(
                f"{diverged}; no checkpoint was written after step {self.last_saved}. Fix the "
                f"cause (e.g. a lower trainer.lr), then continue with --resume --run-dir "
                f"{self.run_dir} [--allow-change trainer.lr]"
            )
        if interrupted and not run.stop_reason:
            run.stop_reason = (
                f"interrupted: checkpoint at step {self.last_saved} in {self.ckpt_dir}; "
                f"continue with --resume --run-dir {self.run_dir}"
            )
        if run.stop_reason:
            self.log(run.stop_reason)
        return bool(run.stop_reason)

    def _row(self, step: int) -> dict[str, Any]:
        """The step's metrics row: the GRPO step and, when due, the evaluation; a step whose
        rollout, loss or evaluation was not finite is counted skipped and said."""
        cfg, run = self.cfg, self.run
        if cfg.trainer.lr_schedule != "constant":  # else untouched: a plugin may own the rate
            for group in run.optimizer.param_groups:
                group["lr"] = lr_at(cfg.trainer, step)
        run.game.reseed(derived_seed(cfg.seed, run.dist.rank, step, 1))  # engine tie-breaks
        skipped0, run.skip_reason = run.skipped_steps, None
        restarts0 = run.game.stats().get("restarts", 0)
        try:
            row, rolled_out = metrics_row(step, grpo_step(run, step)), True
        except NonFinite as exc:  # the rollout's logits: nothing of this step is usable
            row, rolled_out = _skipped_row(run, step, f"{exc} (in the rollout)"), False
        every = cfg.trainer.eval_every
        if self.dist.main and rolled_out and every and step % every == 0:
            try:
                row.update(self.evaluate(step))
            except NonFinite as exc:
                row = {**row, **_skipped_row(run, step, f"{exc} (in the evaluation)")}
        if run.skipped_steps > skipped0:
            run.consecutive_skips += 1
            run.skip_reason = run.skip_reason or "the loss or the gradient was not finite"
            self.log(f"step {step} skipped: {run.skip_reason}")
        else:
            run.consecutive_skips = 0
        restarts = run.game.stats().get("restarts", 0) - restarts0
        if restarts:
            self.log(
                f"step {step}: the game's engine was restarted {restarts} time(s) "
                f"(rollout/engine_restarts)"
            )
        return row

    def _diverged(self, step: int) -> str | None:
        """Why training diverged, when ``trainer.max_consecutive_skips`` steps in a row were
        skipped; else None."""
        run, limit = self.run, self.cfg.trainer.max_consecutive_skips
        if not limit or run.consecutive_skips < limit:
            return None
        return (
            f"training diverged: {run.consecutive_skips} consecutive steps skipped "
            f"(steps {step - run.consecutive_skips + 1}-{step}; the last because "
            f"{run.skip_reason})"
        )

    def _checkpoint(self, step: int) -> None:
        keep = self.cfg.trainer.keep_checkpoints
        why = save_checkpoint(self.run, self.ckpt_dir, step, keep=keep)
        if why is None:
            self.last_saved = step
        else:
            self.log(
                f"step {step}: no checkpoint written: {why}; the resume point stays "
                f"step {self.last_saved}"
            )

    # -- after the last step ---------------------------------------------------------------

    def finish(self) -> None:
        """Wait for every rank; after a signal, raise :class:`Interrupted` (the checkpoint is
        written: the CLI exits with 130 / 143 and prints the command that resumes)."""
        distributed.barrier(self.dist)
        stop, reason = self.stop, self.run.stop_reason
        if stop.requested and not reason:  # no step ran after the signal: nothing new to save
            self.log(
                f"interrupted: checkpoint at step {self.last_saved} in {self.ckpt_dir}; continue "
                f"with --resume --run-dir {self.run_dir}"
            )
        if stop.requested or (reason or "").startswith("interrupted"):
            raise Interrupted(stop.exit_code)

    def fail(self, exc: BaseException) -> None:
        """Re-raise ``exc``; a failure the run cannot go on from (disk, engine) as its one-line
        :class:`RunFailure`, which train.log keeps too."""
        if isinstance(exc, Interrupted):  # the CLI prints the command that resumes from here
            exc.run_dir, exc.step = self.run_dir, self.last_saved
        # a configuration error found before the first step (a plugin's train_start check):
        # nothing ran, so the files this call wrote go, and the fixed command can start afresh
        self.undo = isinstance(exc, UserError) and not self.begun and not self.resume
        failure = as_run_failure(exc, self.run_dir, self.last_saved)
        if self.logfile is not None and (
            failure is not None or not isinstance(exc, (KeyboardInterrupt, UserError))
        ):
            # train.log keeps why the run ended; the terminal gets the line once, from the CLI
            tee(self.logfile, lambda line: None)(
                f"step {self.step}: {failure or f'{type(exc).__name__}: {exc}'}"
            )
        if failure is None or failure is exc:
            raise exc
        raise failure from exc

    def close(self) -> None:
        """Restore the signal handlers; end the plugins, the game's engines, the metrics (and
        wandb's artifacts), train.log, DDP and the lock, each even if one before failed."""
        self.stop.restore()
        if self.bar is not None:
            self.bar.close()
        run = self.run
        try:
            run.plugins.train_end(run.view(self.step))
        finally:
            run.game.close()
            if self.logger is not None:
                upload_artifacts(self.logger, self.cfg, self.run_dir)
                quietly(self.logger.close)
            if self.logfile is not None:
                quietly(self.logfile.close)
            if run.ddp_model is not None:
                # the DDP wrapper (its reducer) must be freed while its process group is alive;
                # freed after destroy_process_group, its destructor sometimes blocked forever
                run.ddp_model = None
                run.loss = None  # type: ignore[assignment]  # it holds the wrapper too
                gc.collect()
            distributed.close(self.dist)
            if self.lock is not None:
                self.lock.release()
                if self.undo:
                    self._remove_written()

    def _remove_written(self) -> None:
        """Rank 0, after a refused fresh start: remove the run directory this call created, or
        the entries it added to one that existed."""
        if self.existed is None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for path in self.run_dir.iterdir():
            if path.name not in self.existed:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _skipped_row(run: Run, step: int, reason: str) -> dict[str, Any]:
    """The metrics of a step whose rollout or evaluation met non-finite logits."""
    run.skipped_steps += 1
    run.skip_reason = reason
    return metrics_row(
        step,
        {
            K.TRAIN_SKIPPED_STEPS: run.skipped_steps,
            K.TRAIN_PPO_EPOCHS_RUN: 0,
            K.TRAIN_LR: run.optimizer.param_groups[0]["lr"],
        },
    )
