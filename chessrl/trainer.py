"""The loop: :func:`train` runs a config's steps in a run directory, with checkpoints, resume,
evaluation, Ctrl-C and the run's logs. The algorithm is :func:`chessrl.step.grpo_step`;
building a run is :mod:`chessrl.run`. The names that lived here before the split
(``grpo_step``, ``build_run``, ``Run``, ...) are re-exported.
"""

from __future__ import annotations

import datetime as _dt
import errno
import gc
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from chessrl import checkpoint, distributed, rundir
from chessrl.config import Config, config_to_dict, dumps_toml
from chessrl.errors import EngineFailure, Interrupted, NonFinite, RunFailure, UserError
from chessrl.metrics import MetricsLogger, read_metrics
from chessrl.policy import log_probs
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
    state_dict,
)
from chessrl.step import (  # noqa: F401 - re-exported, and grpo_step is looked up here per step
    grpo_step,
    loss_terms,
    optimizer_step,
)


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
    from chessrl.health import HealthMonitor

    if max_steps is not None and max_steps < 0:
        raise UserError(f"max_steps = {max_steps}: the steps to run must be >= 0")
    dist = distributed.init(resolve_device(cfg.device))
    run_dir = Path(distributed.broadcast(dist, str(run_dir)))
    ckpt_dir = run_dir / "checkpoints"
    say = echo or echo_above_bar  # stderr; on a terminal, above the progress bar

    def log(line: str) -> None:
        if dist.main:
            say(line)

    lock, created, refused = None, False, None
    try:
        if dist.main:
            try:
                lock, created = _lock_run_dir(run_dir, resume)
            except UserError as exc:
                refused = str(exc)
        refused = distributed.broadcast(dist, refused)  # every rank stops, not rank 0 alone
        if refused:
            raise UserError(refused)
        start_from = rundir.resume_checkpoint(run_dir)
        if resume:
            if start_from is None and not (run_dir / "config.toml").exists():
                raise UserError(
                    f"--resume: {run_dir} holds no run (no checkpoint, no config.toml); "
                    "start without --resume"
                )
            changes = rundir.config_changes(run_dir, cfg, allow_change)
        elif allow_change:
            raise UserError("--allow-change works with --resume only: a new run takes any config")
        elif rundir.holds_a_run(run_dir):
            raise UserError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                f"--run-dir"
            )
        log(
            f"{cfg.name}: building the run in {run_dir} (the {cfg.env.name} game and its "
            f"engines, the policy, "
            f"{len(cfg.plugins)} plugin(s))"
        )
        run = build_run(
            cfg, run_dir, log, dist
        )  # fails before anything is written (e.g. no engine)
    except BaseException:
        if lock is not None:
            lock.release()
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)  # it holds nothing but the lock
        raise
    logger = bar = logfile = None
    step = last_saved = 0
    stop = _GracefulStop(log)  # SIGINT / SIGTERM: finish the step, checkpoint, exit
    try:
        if dist.main:
            rundir.write_text(run_dir / "config.toml", dumps_toml(config_to_dict(cfg)))
            logfile = open(run_dir / "train.log", "a")
            run.log = log = _tee(logfile, say)
            stop.log = log
        start = 0
        if resume and start_from is not None:
            start = load_state(run, checkpoint.load(start_from), start_from)
            log(f"resumed from step {start} ({start_from.relative_to(run_dir)})")
        elif resume:
            log("resume: the run saved no checkpoint yet; starting it from step 0")
        if resume:
            for key, old, new in changes:
                log(f"resume: {key} changed from {old!r} to {new!r} (--allow-change {key})")
            for (
                group
            ) in run.optimizer.param_groups:  # the checkpoint's lr unless --allow-change trainer.lr
                group["lr"] = cfg.trainer.lr
        step = last_saved = start
        health = HealthMonitor(window=cfg.trainer.health_window)
        kept: list[dict[str, Any]] = []
        if dist.main:
            if not (
                ckpt_dir / "initial.pt"
            ).exists():  # the state before the first update, written first
                why = _save(run, ckpt_dir, 0, initial=True)
                if why is not None:
                    raise RunFailure(
                        f"the initial policy is unusable: {why}; check policy.init_checkpoint"
                    )
            logger = MetricsLogger(
                run_dir,
                wandb=cfg.logging.wandb,
                project=cfg.logging.project,
                name=run_dir.name,
                config=config_to_dict(cfg),
                resume_step=start if resume else None,
                entity=cfg.logging.entity,
                group=cfg.logging.group,
                tags=cfg.logging.tags,
            )
            if logger.where:
                log(logger.where)
            kept = read_metrics(run_dir / "metrics.jsonl")
            for row in kept:  # findings already reported stay quiet
                health.update(row)
        run.plugins.train_start(run.view(start))

        def record(
            row: dict[str, Any],
        ) -> None:  # rank 0: the metrics stream, then the health rules
            logger.log(row)
            for finding in health.update(row):
                log(finding.line())
                logger.finding(finding.code, finding.severity, finding.line())

        def evaluate(
            step: int,
        ) -> dict[str, float]:  # the opponents' generators derive from (seed, step)
            run.game.reseed(derived_seed(cfg.seed, 0, step, 2))
            if step == 0:
                log(
                    "evaluating the initial policy (step 0): the baseline of every later evaluation"
                )
            else:
                log(
                    f"evaluating step {step} ({cfg.trainer.eval_games} games per evaluation "
                    f"opponent)"
                )
            out = run_eval(run, step)
            log(eval_line(step, out))
            return out

        if (
            dist.main
            and start == 0
            and cfg.trainer.eval_every
            and cfg.trainer.eval_initial
            and not any(r["step"] == 0 for r in kept)
        ):
            record(
                {"step": 0, **evaluate(0)}
            )  # the initial policy: the baseline of every later eval
        end = cfg.trainer.steps if max_steps is None else min(cfg.trainer.steps, start + max_steps)
        if dist.main and (cfg.logging.progress if progress is None else progress):
            bar = Progress(
                cfg.name, end, start
            )  # a bar on a terminal, plain periodic lines elsewhere
        diverged = None
        for step in range(start + 1, end + 1):
            run.game.reseed(derived_seed(cfg.seed, run.dist.rank, step, 1))  # engine tie-breaks
            skipped0, run.skip_reason = run.skipped_steps, None
            restarts0 = run.game.stats().get("restarts", 0)
            try:
                row, rolled_out = {"step": step, **grpo_step(run, step)}, True
            except NonFinite as exc:  # the rollout's logits: nothing of this step is usable
                row, rolled_out = _skipped_row(run, step, f"{exc} (in the rollout)"), False
            if (
                dist.main
                and rolled_out
                and cfg.trainer.eval_every
                and step % cfg.trainer.eval_every == 0
            ):
                try:
                    row.update(evaluate(step))
                except NonFinite as exc:
                    row = {**row, **_skipped_row(run, step, f"{exc} (in the evaluation)")}
            if run.skipped_steps > skipped0:
                run.consecutive_skips += 1
                run.skip_reason = run.skip_reason or "the loss or the gradient was not finite"
                log(f"step {step} skipped: {run.skip_reason}")
            else:
                run.consecutive_skips = 0
            restarts = run.game.stats().get("restarts", 0) - restarts0
            if restarts:
                log(
                    f"step {step}: the game's engine was restarted {restarts} time(s) "
                    f"(rollout/engine_restarts)"
                )
            limit = cfg.trainer.max_consecutive_skips
            if limit and run.consecutive_skips >= limit:
                diverged = (
                    f"training diverged: {run.consecutive_skips} consecutive steps skipped "
                    f"(steps {step - run.consecutive_skips + 1}-{step}; the last because "
                    f"{run.skip_reason})"
                )
            interrupted = distributed.any_true(dist, stop.requested)
            if dist.main:
                record(row)
                if bar is not None:
                    bar.update(
                        step,
                        ret=f"{row.get('rollout/return_mean', float('nan')):+.3f}",
                        H=f"{row.get('train/entropy', 0):.2f}",
                        clip=f"{row.get('train/clip_fraction', 0):.2f}",
                    )
                if diverged is None and (
                    step % cfg.trainer.checkpoint_every == 0
                    or step == end
                    or run.stop_reason
                    or interrupted
                ):
                    why = _save(run, ckpt_dir, step, keep=cfg.trainer.keep_checkpoints)
                    if why is None:
                        last_saved = step
                    else:
                        log(
                            f"step {step}: no checkpoint written: {why}; the resume point stays "
                            f"step {last_saved}"
                        )
            if diverged is not None:
                raise RunFailure(
                    f"{diverged}; no checkpoint was written after step {last_saved}. Fix the cause "
                    f"(e.g. a lower trainer.lr), then continue with --resume --run-dir {run_dir} "
                    "[--allow-change trainer.lr]"
                )
            if interrupted and not run.stop_reason:
                run.stop_reason = (
                    f"interrupted: checkpoint at step {last_saved} in {ckpt_dir}; "
                    f"continue with --resume --run-dir {run_dir}"
                )
            if run.stop_reason:
                log(run.stop_reason)
                break
        distributed.barrier(dist)
        if (
            stop.requested and not run.stop_reason
        ):  # no step ran after the signal: nothing new to save
            log(
                f"interrupted: checkpoint at step {last_saved} in {ckpt_dir}; continue with "
                f"--resume --run-dir {run_dir}"
            )
        if stop.requested or (run.stop_reason or "").startswith("interrupted"):
            raise Interrupted(stop.exit_code)  # after the checkpoint: the CLI exits with 130 / 143
    except BaseException as exc:
        if isinstance(exc, Interrupted):  # the CLI prints the command that resumes from here
            exc.run_dir, exc.step = run_dir, last_saved
        failure = _as_run_failure(exc, run_dir, last_saved)
        if logfile is not None and (
            failure is not None or not isinstance(exc, (KeyboardInterrupt, UserError))
        ):
            # train.log keeps why the run ended; the terminal gets the line once, from the CLI
            _tee(logfile, lambda line: None)(
                f"step {step}: {failure or f'{type(exc).__name__}: {exc}'}"
            )
        if failure is None or failure is exc:
            raise
        raise failure from exc
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        try:
            run.plugins.train_end(run.view(step))
        finally:
            run.game.close()
            if logger is not None:
                _upload_artifacts(logger, cfg, run_dir)
                _quietly(logger.close)
            if logfile is not None:
                _quietly(logfile.close)
            if run.ddp_model is not None:
                # the DDP wrapper (its reducer) must be freed while its process group is alive;
                # freed after destroy_process_group, its destructor sometimes blocked forever
                run.ddp_model = run.loss = None
                gc.collect()
            distributed.close(dist)
            if lock is not None:
                lock.release()
    return run_dir


def _upload_artifacts(logger: MetricsLogger, cfg: Config, run_dir: Path) -> None:
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


def _lock_run_dir(run_dir: Path, resume: bool) -> tuple[rundir.RunLock, bool]:
    """Create ``run_dir`` if needed and lock it; ``(lock, created)``."""
    if resume and not run_dir.is_dir():
        raise UserError(f"--resume: {run_dir}: no such run directory")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = rundir.RunLock(run_dir)
        lock.acquire()
    except OSError as exc:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise UserError(
            f"{run_dir}: cannot use it as the run directory ({exc.strerror or exc}); "
            "choose a writable --run-dir"
        ) from None
    return lock, created


def _save(
    run: Run, ckpt_dir: Path, step: int, *, keep: int = 1, initial: bool = False
) -> str | None:
    """Write the step's checkpoint unless the state is unhealthy; return why it was not written.

    Unhealthy: a policy or optimiser tensor that is not finite, or a policy whose logits on
    a few start positions are not finite (finite but exploded weights). The previous
    checkpoint then stays the resume point. A disk failure is a :class:`RunFailure`.
    """
    state = state_dict(run, step)
    bad = nonfinite_tensors(state)
    why = (
        f"{len(bad)} tensor(s) are not finite ({', '.join(bad[:3])})"
        if bad
        else None
        if _logits_finite(run)
        else "the policy's logits are not finite"
    )
    if why is not None:
        return why
    try:
        if initial:
            checkpoint.save_initial(ckpt_dir, state)
        else:
            checkpoint.save(ckpt_dir, step, state, keep)
    except OSError as exc:
        raise RunFailure(
            f"cannot write the step-{step} checkpoint in {ckpt_dir}: {exc.strerror or exc} "
            "(no partial file was left); free space or make it writable, then continue with "
            f"--resume --run-dir {run.run_dir}"
        ) from None
    return None


def _logits_finite(run: Run, n: int = 8) -> bool:
    """Whether the policy's log-probs on ``n`` start positions are finite where legal."""
    obs = run.game.observe(run.game.initial_states(n, np.random.default_rng(0)))
    mask = torch.as_tensor(obs.action_mask)
    with torch.no_grad():
        lp = log_probs(
            run.policy,
            torch.as_tensor(obs.tokens).to(run.device),
            mask.to(run.device),
            run.config.rollout.temperature,
        ).cpu()
    return bool(torch.isfinite(lp.amax(-1)).all())


def _as_run_failure(exc: BaseException, run_dir: Path, last_saved: int) -> RunFailure | None:
    """The one line for a run that cannot go on (a disk or an engine failure), else None."""
    resume = f"the last checkpoint is step {last_saved}: continue with --resume --run-dir {run_dir}"
    if isinstance(exc, RunFailure):
        return exc
    if isinstance(exc, EngineFailure):
        return RunFailure(f"the game's engine failed: {exc}; {resume} once the engine works")
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return RunFailure(
            f"cannot write {exc.filename or run_dir}: {exc.strerror}; free space or make it "
            f"writable; {resume}"
        )
    return None


_DISK_ERRNOS = (
    errno.ENOSPC,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EIO,
)


def _skipped_row(run: Run, step: int, reason: str) -> dict[str, Any]:
    """The metrics of a step whose rollout or evaluation met non-finite logits."""
    run.skipped_steps += 1
    run.skip_reason = reason
    return {
        "step": step,
        "train/skipped_steps": run.skipped_steps,
        "train/ppo_epochs_run": 0,
        "train/lr": run.optimizer.param_groups[0]["lr"],
    }


def _quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except OSError:  # a full disk fails the flush of a file being closed; the run already said why
        pass


def _tee(logfile, say: Callable[[str], None]) -> Callable[[str], None]:
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


class _GracefulStop:
    """First SIGINT (Ctrl-C) or SIGTERM: finish the current step, checkpoint, exit with 130 or
    143. A second signal aborts at once (engines are still closed; no new checkpoint)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, log: Callable[[str], None]) -> None:
        import threading

        self.requested = False
        self.exit_code = 130
        self.log = log
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
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


def eval_line(step: int, metrics: dict[str, float]) -> str:
    """One line for an evaluation: every ``eval/...`` number that carries a 95% interval
    (``_lo``/``_hi``): match scores, benchmark proportions, an Elo."""
    parts = []
    for key, value in metrics.items():
        lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
        if not key.startswith("eval/") or lo is None or hi is None:
            continue
        if key.endswith("/elo") and key != "eval/ladder/elo":
            continue  # an opponent's Elo difference repeats its score
        name = key[len("eval/") :].removesuffix("/score")
        if key.endswith("/elo"):
            parts.append(f"{name} {value:+.0f} [{lo:+.0f}, {hi:+.0f}]")
        else:
            parts.append(f"{name} {value:.3f} [{lo:.3f}, {hi:.3f}]")
    took = metrics.get("time/eval")
    return (
        f"eval step {step}: "
        + ("; ".join(parts) or "no metrics with intervals")
        + (f" ({took:.0f} s)" if took is not None else "")
    )


def run_eval(run: Run, step: int) -> dict[str, float]:
    """Play the game's evaluation opponents; ``eval/<opponent>/...`` metrics."""
    from chessrl.match import play_match

    t0 = time.perf_counter()
    out: dict[str, float] = {}
    matches: dict[str, tuple[float, int]] = {}
    for name, opponent in run.game.eval_opponents().items():
        n = run.config.trainer.eval_games
        starts = run.game.eval_states((n + 1) // 2, np.random.default_rng([run.config.seed, step]))
        res = play_match(
            run.game,
            run.policy,
            opponent,
            games=n,
            temperature=run.config.rollout.temperature,
            greedy=True,
            seed=run.config.seed + step,
            starts=starts,
        )
        out.update(res.metrics(f"eval/{name}"))
        matches[name] = (res.score, res.games)
    benchmark = run.game.benchmark(run.policy, matches)
    out.update({f"eval/{k}": float(v) for k, v in benchmark.items()})
    run.plugins.eval_end(out, step)
    out["time/eval"] = time.perf_counter() - t0
    return out
