"""The trainer. :func:`grpo_step` is the algorithm, top to bottom; :func:`train` is the plumbing.

One step: old-policy sync (every N steps) -> rollout -> advantages -> ppo_steps x (loss with
plugin terms -> backward -> grad clip -> optimiser step) -> plugin updates -> log.
"""

from __future__ import annotations

import copy
import datetime as _dt
import errno
import gc
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tensordict import TensorDict

from chessrl import checkpoint, pluginmanager, rundir
from chessrl import distributed as dist_
from chessrl.advantage import rollout_advantages
from chessrl.budget import backward_with_budget, value_budget
from chessrl.config import Config, config_to_dict, dumps_toml
from chessrl.env import BoardGameEnv
from chessrl.errors import EngineFailure, Interrupted, NonFinite, RunFailure, UserError
from chessrl.loss import GRPOLoss
from chessrl.metrics import MetricsLogger, read_metrics
from chessrl.policy import build_policy, log_probs
from chessrl.progress import Progress, echo as echo_above_bar
from chessrl.regularisers import Coefficients, LossTerm, PluginReport
from chessrl.rollout import RolloutTimes, collect


@dataclass
class Run:
    """Everything one training run holds; plugins receive it in train_start/train_end."""

    config: Config
    run_dir: Path
    game: Any
    env: BoardGameEnv
    policy: torch.nn.Module
    old_policy: torch.nn.Module
    ref_policy: torch.nn.Module | None
    loss: GRPOLoss
    optimizer: torch.optim.Optimizer
    coefs: Coefficients
    plugins: Any                      # the per-run pluggy manager of enabled regularisers
    plugin_names: list[str]
    generator: torch.Generator
    device: torch.device
    log: Callable[[str], None] = print
    skipped_steps: int = 0
    consecutive_skips: int = 0        # skipped steps in a row; max_consecutive_skips stops the run
    skip_reason: str | None = None    # why the current step was skipped, when a check knows
    last_sync: int = 0
    stop_reason: str | None = None
    dist: dist_.Dist = field(default_factory=dist_.Dist)
    ddp: Any = None                   # the DDP wrapper when running under torchrun

    def hook(self, name: str, **kwargs) -> list[tuple[str, Any]]:
        return pluginmanager.call_hook(self.plugins, name, **kwargs)


def grpo_step(run: Run, step: int) -> dict[str, float]:
    """One GRPO step; returns its metrics row (docs/metrics.md)."""
    cfg, t_step = run.config, time.perf_counter()
    run.coefs.begin_step()
    # each step's randomness derives from (seed, rank, step): a resumed run replays exactly
    run.generator.manual_seed(rank_seed(cfg.seed, run.dist.rank, step))
    run.env.set_seed(rank_seed(cfg.seed, run.dist.rank, step), static_seed=True)
    engine_t0 = getattr(run.game, "engine_seconds", 0.0)
    engine_stats0 = _engine_stats(run.game)

    # --- old-policy sync: rollouts sample from the old policy --------------------------
    if cfg.trainer.sync_every > 1 and (step - 1) % cfg.trainer.sync_every == 0:
        run.old_policy.load_state_dict(run.policy.state_dict())
        run.last_sync = step
    age = 0 if cfg.trainer.sync_every == 1 else step - run.last_sync

    # --- rollout: R roots x G trajectories x T plies --------------------------------
    t0, rt = time.perf_counter(), RolloutTimes()
    ro = cfg.rollout
    td = collect(run.env, run.old_policy, plies=ro.plies, temperature=ro.temperature, opponent=ro.opponent,
                 train_plies=ro.train_plies, teacher_forcing_prob=ro.teacher_forcing_prob,
                 teacher_forcing_depth=ro.teacher_forcing_depth, generator=run.generator, times=rt,
                 score="last" if cfg.advantage.returns == "terminal" else "every_ply",
                 expert_members=ro.expert_members)
    t_rollout = time.perf_counter() - t0

    # --- advantages: group-relative, per player, broadcast to that player's plies -----
    returns, zero = rollout_advantages(td, cfg.advantage.returns, cfg.advantage.scale, cfg.advantage.eps)
    trained = td["loss_mask"]

    # --- the training batch: trained plies only, with old (and reference) log-probs ----
    batch = td.select("observation", "action_mask", "action", "advantage", "traj_index",
                      "sample_log_prob").reshape(-1)[trained.reshape(-1)].to(run.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        batch["old_log_probs"] = log_probs(run.old_policy, batch["observation"], batch["action_mask"], ro.temperature)
        if run.ref_policy is not None:
            batch["ref_log_probs"] = log_probs(run.ref_policy, batch["observation"], batch["action_mask"], ro.temperature)
    t_policy = rt.policy + time.perf_counter() - t0
    old_taken = batch["old_log_probs"].gather(-1, batch["action"][:, None]).squeeze(-1)
    drift = float((old_taken - batch["sample_log_prob"]).abs().max()) if len(batch) else 0.0

    # --- PPO epochs: loss with plugin terms -> backward -> clip -> step ------------------
    t0, t_budget = time.perf_counter(), 0.0
    params = [p for p in run.policy.parameters() if p.requires_grad]
    epoch_rows, budget, epochs_run, skipped = [], {}, 0, False
    measure = bool(cfg.trainer.budget_every) and step % cfg.trainer.budget_every == 0
    for epoch in range(cfg.trainer.ppo_steps if len(batch) else 0):
        run.optimizer.zero_grad(set_to_none=True)
        if epoch == 0 and measure and run.dist.enabled:
            # DDP syncs gradients in backward(); per-term gradients are a local measurement
            tb = time.perf_counter()
            with run.ddp.no_sync():
                _, terms, _, _ = loss_terms(run, batch)
                budget.update(backward_with_budget(terms, params, accumulate=False))
            t_budget = time.perf_counter() - tb
        out, terms, raws, coefs = loss_terms(run, batch)
        total = sum(terms.values())
        if not dist_.all_true(run.dist, bool(torch.isfinite(total))):
            skipped = True
            break
        if epoch == 0:
            budget.update(value_budget({k: float(v.detach()) for k, v in terms.items()}, coefs, raws))
        if epoch == 0 and measure and not run.dist.enabled:
            tb = time.perf_counter()  # the per-term gradients sum to the total gradient
            budget.update(backward_with_budget(terms, params))
            t_budget = time.perf_counter() - tb
        else:
            total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.trainer.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm):  # gradients are all-reduced: every rank agrees
            skipped = True
            run.optimizer.zero_grad(set_to_none=True)
            break
        if not optimizer_step(run, params):  # a step leaving non-finite weights is undone
            skipped = True
            break
        epochs_run += 1
        epoch_rows.append(_epoch_row(out, batch, total, grad_norm))
    run.skipped_steps += skipped
    t_learner = time.perf_counter() - t0

    # --- metrics, then plugin updates (controllers read this step's metrics) -------------
    m = _step_metrics(run, td, returns, zero, epoch_rows, epochs_run, len(batch), drift, age)
    m.update(budget)
    m = dist_.mean_metrics(run.dist, m)  # every rank's controllers see the same numbers
    run.hook("chessrl_adjust_coefficients", metrics=m, coefs=run.coefs, step=step)
    for name, report in run.hook("chessrl_step_end", metrics=m, step=step):
        m.update(_plugin_metrics(name, report))
        if report.message:
            run.log(f"plugin {name}: {report.message}")
        if report.stop:
            run.stop_reason = f"plugin {name} stopped training: {report.stop}"
    engine = getattr(run.game, "engine_seconds", engine_t0) - engine_t0
    t_total = time.perf_counter() - t_step
    m.update(_engine_metrics(engine_stats0, _engine_stats(run.game)))
    m.update({"time/step": t_total, "time/rollout": t_rollout, "time/reward_engine": engine,
              "time/policy": t_policy, "time/learner": t_learner, "time/budget": t_budget,
              "time/overhead_frac": max(0.0, 1 - (engine + t_policy + t_learner) / t_total)})
    return m


def _expert_metrics(td) -> dict[str, float]:
    """With ``expert_members``: how the engine's root move fared in its groups."""
    expert = td.get("expert_ply", None)
    if expert is None or not bool(expert.any()):
        return {}
    return {"rollout/expert_advantage": float(td["advantage"][expert].mean()),
            "rollout/expert_plies": int(expert.sum())}


def _engine_stats(game) -> dict[str, float]:
    stats = getattr(game, "stats", None)
    return stats() if callable(stats) else {}


def _engine_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """This step's reward-engine work: searches run, cache/dedup hit rate, engine restarts."""
    if "evaluations" not in after:
        return {}
    d = {k: after.get(k, 0) - before.get(k, 0) for k in ("evaluations", "hits", "misses", "restarts")}
    looked = d["hits"] + d["misses"]
    return {"rollout/reward_searches": d["evaluations"],
            "rollout/reward_cache_hit_rate": d["hits"] / looked if looked else 0.0,
            "rollout/engine_restarts": d["restarts"]}


def loss_terms(run: Run, batch: TensorDict):
    """The loss module's output plus every plugin's terms: ``(out, terms, raws, coefs)``.

    ``terms[name]`` is the coefficient-weighted, differentiable term (``objective`` first);
    each is also written into ``out`` as ``loss_<name>``.
    """
    out = run.loss(batch)
    terms = {"objective": out["loss_objective"]}
    raws, coefs = {"objective": float(out["loss_objective"].detach())}, {"objective": 1.0}
    for plugin, res in run.hook("chessrl_loss_terms", out=out, batch=batch, coefs=run.coefs):
        for term in (res if isinstance(res, (list, tuple)) else [res]):
            if not isinstance(term, LossTerm):
                raise TypeError(f"plugin {plugin}: chessrl_loss_terms must return LossTerm, got {type(term).__name__}")
            if term.name in terms:
                raise ValueError(f"plugin {plugin}: loss term '{term.name}' already exists")
            terms[term.name] = term.coef * term.raw
            out[f"loss_{term.name}"] = terms[term.name]
            raws[term.name], coefs[term.name] = float(term.raw.detach()), float(term.coef)
    return out, terms, raws, coefs


_EPOCH_KEYS = ("loss_objective", "clip_fraction", "ratio_mean", "ratio_max", "ratio_min", "ess", "entropy",
               "entropy_sample", "kl_old_exact", "kl_old_k1", "kl_old_k3", "kl_ref_exact", "kl_ref_k1", "kl_ref_k3")


def _epoch_row(out: TensorDict, batch: TensorDict, total: torch.Tensor, grad_norm: torch.Tensor) -> dict[str, float]:
    row = {k: float(out[k].detach()) for k in _EPOCH_KEYS if k in out.keys()}
    old = batch["old_log_probs"].gather(-1, batch["action"][:, None]).squeeze(-1)
    row["maxdev"] = float((out["log_probs"].detach() - old).exp().sub(1).abs().max())
    row["loss"], row["grad_norm"] = float(total.detach()), float(grad_norm)
    return row


def _step_metrics(run: Run, td: TensorDict, returns, zero, rows, epochs_run, n_trained, drift, age) -> dict:
    m: dict[str, float] = {"train/lr": run.optimizer.param_groups[0]["lr"], "train/ppo_epochs_run": epochs_run,
                           "train/skipped_steps": run.skipped_steps, "train/trained_plies": n_trained,
                           "train/old_policy_age": age}
    if rows:
        mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        m.update({"train/loss": mean("loss"), "train/loss_objective": mean("loss_objective"),
                  "train/clip_fraction": mean("clip_fraction"), "train/ratio_mean": mean("ratio_mean"),
                  "train/ratio_max": max(r["ratio_max"] for r in rows), "train/ratio_min": min(r["ratio_min"] for r in rows),
                  "train/ratio_first_epoch": rows[0]["ratio_mean"], "train/ratio_first_epoch_maxdev": rows[0]["maxdev"],
                  "train/ess": mean("ess"), "train/entropy": rows[0]["entropy"],
                  "train/entropy_sample": rows[0]["entropy_sample"], "train/grad_norm": rows[-1]["grad_norm"]})
        for k in ("kl_old_exact", "kl_old_k1", "kl_old_k3", "kl_ref_exact", "kl_ref_k1", "kl_ref_k3"):
            if k in rows[-1]:
                m[f"train/{k}"] = rows[-1][k]
    trained = td["loss_mask"]
    r = td["next", "reward"].squeeze(-1)
    root_ret = returns[..., 0].reshape(-1)
    played = td["valid"]
    m.update({
        "rollout/reward_mean": float(r[trained].mean()) if trained.any() else 0.0,
        "rollout/return_mean": float(root_ret.mean()), "rollout/return_std": float(root_ret.std(unbiased=False)),
        "rollout/return_best": float(root_ret.max()), "rollout/return_p90": float(root_ret.quantile(0.9)),
        "rollout/zero_std_groups": int(zero[..., 0].sum()), "rollout/zero_std_frac": float(zero[..., 0].float().mean()),
        "rollout/trained_plies": int(trained.sum()),
        "rollout/game_len_mean": float(played.sum(-1).float().mean()),
        "rollout/terminated_frac": float(td["next", "terminated"][..., -1, 0].float().mean()),
        "rollout/teacher_forced_frac": float(td["forced_traj"][..., 0].float().mean()),
        **_expert_metrics(td),
        "rollout/logprob_drift": drift,
    })
    return m


def _plugin_metrics(name: str, report: PluginReport) -> dict[str, float]:
    if not isinstance(report, PluginReport):
        raise TypeError(f"plugin {name}: chessrl_step_end must return a PluginReport, got {type(report).__name__}")
    out = {f"plugin/{name}/{k}": float(v) for k, v in report.metrics.items()}
    if report.acted is not None:
        out[f"plugin/{name}/acted"] = float(bool(report.acted))
    if report.at_bound is not None:
        out[f"plugin/{name}/at_bound"] = float(bool(report.at_bound))
    out.update(report.declared_metrics(name))
    return out


# ------------------------------------------------------------------------------------------
# plumbing: building a run, the loop, checkpoints, resume, Ctrl-C
# ------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device = 'cuda' but no CUDA device is available; use device = 'cpu' or 'auto'")
    return torch.device(name)


def make_game(cfg: Config, seed: int):
    reg = pluginmanager.games()[cfg.env.name]
    return reg.obj(cfg.env.options, seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, rank, step)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def build_run(cfg: Config, run_dir: Path, log: Callable[[str], None] = print,
              ddp: dist_.Dist | None = None) -> Run:
    """Construct game, env, policies, loss, optimiser and the enabled plugins of a config."""
    ddp = ddp or dist_.Dist()
    device = dist_.device_for(ddp, resolve_device(cfg.device))
    torch_gen = torch.Generator().manual_seed(rank_seed(cfg.seed, ddp.rank))
    game = make_game(cfg, rank_seed(cfg.seed, ddp.rank))
    try:
        env = BoardGameEnv(game, batch_size=(cfg.rollout.roots, cfg.rollout.group_size), device="cpu",
                           seed=rank_seed(cfg.seed, ddp.rank))
        with torch.random.fork_rng(devices=[]):  # the init seed must not touch the global RNG
            torch.manual_seed(cfg.seed)
            policy = build_policy(cfg.policy, game).to(device)
        policy.eval()  # no dropout or batch statistics exist, and none may sneak in
        coefs = Coefficients()
        pm = pluginmanager.new_plugin_manager()
        names = []
        for name, options in cfg.plugins.items():
            inst = pluginmanager.regularisers()[name].obj(name, options, coefs)
            pm.register(inst, name=name)
            names.append(name)
        pluginmanager.check_hooks(pm)
        needs_ref = any(getattr(pm.get_plugin(n), "needs_reference", False) for n in names)
        ref = copy.deepcopy(policy).requires_grad_(False) if needs_ref else None
        old = policy if cfg.trainer.sync_every == 1 else copy.deepcopy(policy).requires_grad_(False)
        wrapped = None
        if ddp.enabled:  # every rank starts from rank 0's weights; backward all-reduces gradients
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None)
        loss = GRPOLoss(wrapped or policy, temperature=cfg.rollout.temperature, clip_low=cfg.loss.clip_low,
                        clip_high=cfg.loss.clip_high, aggregation=cfg.loss.aggregation)
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay,
                                betas=tuple(cfg.trainer.betas))
    except BaseException:
        game.close()
        raise
    return Run(cfg, run_dir, game, env, policy, old, ref, loss, opt, coefs, pm, names, torch_gen, device, log,
               dist=ddp, ddp=wrapped)


def state_dict(run: Run, step: int) -> dict[str, Any]:
    plugin_states: dict = {}
    for _, s in run.hook("chessrl_state_dict"):
        plugin_states.update(s)
    return {"step": step, "policy": run.policy.state_dict(), "optimizer": run.optimizer.state_dict(),
            "old_policy": None if run.old_policy is run.policy else run.old_policy.state_dict(),
            "ref_policy": None if run.ref_policy is None else run.ref_policy.state_dict(),
            "coefficients": run.coefs.state_dict(), "plugins": plugin_states,
            "skipped_steps": run.skipped_steps, "consecutive_skips": run.consecutive_skips,
            "last_sync": run.last_sync, "config": config_to_dict(run.config), "game": run.config.env.name,
            "policy_sizes": getattr(run.policy, "sizes", {})}


_STATE_KEYS = ("step", "policy", "optimizer", "coefficients", "plugins", "skipped_steps", "last_sync")


def load_state(run: Run, state: dict[str, Any], path: Path | str = "checkpoint") -> int:
    """Restore a checkpoint's state into ``run``; return its step. A file that is not a full
    training checkpoint of this game and model is a one-line :class:`UserError` naming it."""
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise UserError(f"{path}: not a training checkpoint (missing {', '.join(missing)}); resume needs "
                        "a file written by 'chessrl run' (policy-only files go to policy.init_checkpoint)")
    if state.get("game", run.config.env.name) != run.config.env.name:
        raise UserError(f"{path}: a checkpoint of game {state['game']!r}, but this run plays "
                        f"{run.config.env.name!r}; a run cannot change its game")
    try:
        run.policy.load_state_dict(state["policy"])
        run.optimizer.load_state_dict(state["optimizer"])
        if state.get("old_policy") is not None and run.old_policy is not run.policy:
            run.old_policy.load_state_dict(state["old_policy"])
        if state.get("ref_policy") is not None and run.ref_policy is not None:
            run.ref_policy.load_state_dict(state["ref_policy"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: does not fit this run's model or optimiser ({first}); "
                        "resume with the config the run was started with") from None
    run.coefs.load_state_dict(state["coefficients"])
    run.hook("chessrl_load_state_dict", states=state["plugins"])
    run.skipped_steps, run.last_sync = state["skipped_steps"], state["last_sync"]
    run.consecutive_skips = state.get("consecutive_skips", 0)
    return int(state["step"])


def optimizer_step(run: Run, params: list[torch.nn.Parameter]) -> bool:
    """``run.optimizer.step()``, undone if it leaves a parameter NaN or infinite (or overflows):
    the parameters and the optimiser state return to what they were before it, and
    ``run.skip_reason`` says why. True when the step was kept."""
    before = [p.detach().clone() for p in params]
    opt_before = copy.deepcopy(run.optimizer.state_dict())
    try:
        run.optimizer.step()
        finite = bool(torch.stack([torch.isfinite(p).all() for p in params]).all()) if params else True
    except RuntimeError as exc:  # e.g. "value cannot be converted to type float without overflow"
        if "overflow" not in str(exc):
            raise
        finite = False
    if dist_.all_true(run.dist, finite):
        return True
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    run.optimizer.load_state_dict(opt_before)
    run.skip_reason = "the optimiser step made parameters non-finite (undone)"
    return False


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the policy and optimiser tensors in ``state`` that hold a NaN or an infinity."""
    bad = [f"policy.{k}" for k, v in state["policy"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    for pid, s in state["optimizer"].get("state", {}).items():
        bad += [f"optimizer.{pid}.{k}" for k, v in s.items()
                if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return bad


def derived_seed(seed: int, rank: int, step: int, purpose: int) -> int:
    """A seed for the game's generators from (run seed, rank, step, purpose: 1 = step, 2 = eval)."""
    return int(np.random.SeedSequence([seed, rank, step, purpose]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def new_run_dir(cfg: Config, root: Path = Path("runs")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{cfg.name}-{stamp}"


def train(cfg: Config, run_dir: Path, *, max_steps: int | None = None, resume: bool = False,
          progress: bool | None = None, echo: Callable[[str], None] | None = None,
          allow_change: tuple[str, ...] | list[str] = ()) -> Path:
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
    ddp = dist_.init(resolve_device(cfg.device))
    run_dir = Path(dist_.broadcast(ddp, str(run_dir)))
    ckpt_dir = run_dir / "checkpoints"
    say = echo or echo_above_bar  # stderr; on a terminal, above the progress bar

    def log(line: str) -> None:
        if ddp.main:
            say(line)

    lock, created, refused = None, False, None
    try:
        if ddp.main:
            try:
                lock, created = _lock_run_dir(run_dir, resume)
            except UserError as exc:
                refused = str(exc)
        refused = dist_.broadcast(ddp, refused)  # every rank stops, not rank 0 alone
        if refused:
            raise UserError(refused)
        start_from = rundir.resume_checkpoint(run_dir)
        if resume:
            if start_from is None and not (run_dir / "config.toml").exists():
                raise UserError(f"--resume: {run_dir} holds no run (no checkpoint, no config.toml); "
                                "start without --resume")
            changes = rundir.config_changes(run_dir, cfg, allow_change)
        elif allow_change:
            raise UserError("--allow-change works with --resume only: a new run takes any config")
        elif rundir.holds_a_run(run_dir):
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
        log(f"{cfg.name}: building the run in {run_dir} (the {cfg.env.name} game and its engines, the policy, "
            f"{len(cfg.plugins)} plugin(s))")
        run = build_run(cfg, run_dir, log, ddp)  # fails before anything is written (e.g. no engine)
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
        if ddp.main:
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
            for group in run.optimizer.param_groups:  # the checkpoint's lr unless --allow-change trainer.lr
                group["lr"] = cfg.trainer.lr
        step = last_saved = start
        health = HealthMonitor(window=cfg.trainer.health_window)
        kept: list[dict[str, Any]] = []
        if ddp.main:
            if not (ckpt_dir / "initial.pt").exists():  # the state before the first update, written first
                why = _save(run, ckpt_dir, 0, initial=True)
                if why is not None:
                    raise RunFailure(f"the initial policy is unusable: {why}; check policy.init_checkpoint")
            logger = MetricsLogger(run_dir, wandb=cfg.logging.wandb, project=cfg.logging.project, name=run_dir.name,
                                   config=config_to_dict(cfg), resume_step=start if resume else None,
                                   entity=cfg.logging.entity, group=cfg.logging.group, tags=cfg.logging.tags)
            if logger.where:
                log(logger.where)
            kept = read_metrics(run_dir / "metrics.jsonl")
            for row in kept:  # findings already reported stay quiet
                health.update(row)
        run.hook("chessrl_train_start", run=run)

        def record(row: dict[str, Any]) -> None:  # rank 0: the metrics stream, then the health rules
            logger.log(row)
            for finding in health.update(row):
                log(finding.line())
                logger.finding(finding.code, finding.severity, finding.line())

        def evaluate(step: int) -> dict[str, float]:  # the opponents' generators derive from (seed, step)
            _reseed(run.game, derived_seed(cfg.seed, 0, step, 2))
            if step == 0:
                log("evaluating the initial policy (step 0): the baseline of every later evaluation")
            else:
                log(f"evaluating step {step} ({cfg.trainer.eval_games} games per evaluation opponent)")
            out = run_eval(run, step)
            log(eval_line(step, out))
            return out

        if (ddp.main and start == 0 and cfg.trainer.eval_every and cfg.trainer.eval_initial
                and not any(r["step"] == 0 for r in kept)):
            record({"step": 0, **evaluate(0)})  # the initial policy: the baseline of every later eval
        end = cfg.trainer.steps if max_steps is None else min(cfg.trainer.steps, start + max_steps)
        if ddp.main and (cfg.logging.progress if progress is None else progress):
            bar = Progress(cfg.name, end, start)  # a bar on a terminal, plain periodic lines elsewhere
        diverged = None
        for step in range(start + 1, end + 1):
            _reseed(run.game, derived_seed(cfg.seed, run.dist.rank, step, 1))  # engine tie-breaks
            skipped0, run.skip_reason = run.skipped_steps, None
            restarts0 = _engine_stats(run.game).get("restarts", 0)
            try:
                row, rolled_out = {"step": step, **grpo_step(run, step)}, True
            except NonFinite as exc:  # the rollout's logits: nothing of this step is usable
                row, rolled_out = _skipped_row(run, step, f"{exc} (in the rollout)"), False
            if ddp.main and rolled_out and cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
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
            restarts = _engine_stats(run.game).get("restarts", 0) - restarts0
            if restarts:
                log(f"step {step}: the game's engine was restarted {restarts} time(s) (rollout/engine_restarts)")
            limit = cfg.trainer.max_consecutive_skips
            if limit and run.consecutive_skips >= limit:
                diverged = (f"training diverged: {run.consecutive_skips} consecutive steps skipped "
                            f"(steps {step - run.consecutive_skips + 1}-{step}; the last because {run.skip_reason})")
            interrupted = dist_.any_true(ddp, stop.requested)
            if ddp.main:
                record(row)
                if bar is not None:
                    bar.update(step, ret=f"{row.get('rollout/return_mean', float('nan')):+.3f}",
                               H=f"{row.get('train/entropy', 0):.2f}", clip=f"{row.get('train/clip_fraction', 0):.2f}")
                if diverged is None and (step % cfg.trainer.checkpoint_every == 0 or step == end or run.stop_reason
                                         or interrupted):
                    why = _save(run, ckpt_dir, step, keep=cfg.trainer.keep_checkpoints)
                    if why is None:
                        last_saved = step
                    else:
                        log(f"step {step}: no checkpoint written: {why}; the resume point stays step {last_saved}")
            if diverged is not None:
                raise RunFailure(f"{diverged}; no checkpoint was written after step {last_saved}. Fix the cause "
                                 f"(e.g. a lower trainer.lr), then continue with --resume --run-dir {run_dir} "
                                 "[--allow-change trainer.lr]")
            if interrupted and not run.stop_reason:
                run.stop_reason = (f"interrupted: checkpoint at step {last_saved} in {ckpt_dir}; "
                                   f"continue with --resume --run-dir {run_dir}")
            if run.stop_reason:
                log(run.stop_reason)
                break
        dist_.barrier(ddp)
        if stop.requested and not run.stop_reason:  # no step ran after the signal: nothing new to save
            log(f"interrupted: checkpoint at step {last_saved} in {ckpt_dir}; continue with --resume --run-dir {run_dir}")
        if stop.requested or (run.stop_reason or "").startswith("interrupted"):
            raise Interrupted(stop.exit_code)  # after the checkpoint: the CLI exits with 130 / 143
    except BaseException as exc:
        if isinstance(exc, Interrupted):  # the CLI prints the command that resumes from here
            exc.run_dir, exc.step = run_dir, last_saved
        failure = _as_run_failure(exc, run_dir, last_saved)
        if logfile is not None and (failure is not None or not isinstance(exc, (KeyboardInterrupt, UserError))):
            # train.log keeps why the run ended; the terminal gets the line once, from the CLI
            _tee(logfile, lambda line: None)(f"step {step}: {failure or f'{type(exc).__name__}: {exc}'}")
        if failure is None or failure is exc:
            raise
        raise failure from exc
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        try:
            run.hook("chessrl_train_end", run=run)
        finally:
            run.game.close()
            if logger is not None:
                _upload_artifacts(logger, cfg, run_dir)
                _quietly(logger.close)
            if logfile is not None:
                _quietly(logfile.close)
            if run.ddp is not None:
                # the DDP wrapper (its reducer) must be freed while its process group is alive;
                # freed after destroy_process_group, its destructor sometimes blocked forever
                run.ddp = run.loss = None
                gc.collect()
            dist_.close(ddp)
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
            logger.upload(f"report-{logger.run.id}", "report", files, "chessrl report of " + run_dir.name, base=run_dir)
        except Exception as exc:
            print(f"wandb: the report was not uploaded ({type(exc).__name__}: {exc})", file=sys.stderr)
    if cfg.logging.wandb_checkpoint:
        latest = rundir.resume_checkpoint(run_dir)
        if latest is not None:
            logger.upload(f"model-{logger.run.id}", "model", [latest], f"{run_dir.name} {latest.name}")


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
        raise UserError(f"{run_dir}: cannot use it as the run directory ({exc.strerror or exc}); "
                        "choose a writable --run-dir") from None
    return lock, created


def _save(run: Run, ckpt_dir: Path, step: int, *, keep: int = 1, initial: bool = False) -> str | None:
    """Write the step's checkpoint unless the state is unhealthy; return why it was not written.

    Unhealthy: a policy or optimiser tensor that is not finite, or a policy whose logits on
    a few start positions are not finite (finite but exploded weights). The previous
    checkpoint then stays the resume point. A disk failure is a :class:`RunFailure`.
    """
    state = state_dict(run, step)
    bad = nonfinite_tensors(state)
    why = (f"{len(bad)} tensor(s) are not finite ({', '.join(bad[:3])})" if bad else
           None if _logits_finite(run) else "the policy's logits are not finite")
    if why is not None:
        return why
    try:
        if initial:
            checkpoint.save_initial(ckpt_dir, state)
        else:
            checkpoint.save(ckpt_dir, step, state, keep)
    except OSError as exc:
        raise RunFailure(f"cannot write the step-{step} checkpoint in {ckpt_dir}: {exc.strerror or exc} "
                         "(no partial file was left); free space or make it writable, then continue with "
                         f"--resume --run-dir {run.run_dir}") from None
    return None


def _logits_finite(run: Run, n: int = 8) -> bool:
    """Whether the policy's log-probs on ``n`` start positions are finite where legal."""
    obs = run.game.observe(run.game.initial_states(n, np.random.default_rng(0)))
    mask = torch.as_tensor(obs.action_mask)
    with torch.no_grad():
        lp = log_probs(run.policy, torch.as_tensor(obs.tokens).to(run.device), mask.to(run.device),
                       run.config.rollout.temperature).cpu()
    return bool(torch.isfinite(lp.amax(-1)).all())


def _as_run_failure(exc: BaseException, run_dir: Path, last_saved: int) -> RunFailure | None:
    """The one line for a run that cannot go on (a disk or an engine failure), else None."""
    resume = f"the last checkpoint is step {last_saved}: continue with --resume --run-dir {run_dir}"
    if isinstance(exc, RunFailure):
        return exc
    if isinstance(exc, EngineFailure):
        return RunFailure(f"the game's engine failed: {exc}; {resume} once the engine works")
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return RunFailure(f"cannot write {exc.filename or run_dir}: {exc.strerror}; free space or make it "
                          f"writable; {resume}")
    return None


_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _reseed(game: Any, seed: int) -> None:
    reseed = getattr(game, "reseed", None)  # Game.reseed; a duck-typed game may lack it
    if reseed is not None:
        reseed(seed)


def _skipped_row(run: Run, step: int, reason: str) -> dict[str, Any]:
    """The metrics of a step whose rollout or evaluation met non-finite logits."""
    run.skipped_steps += 1
    run.skip_reason = reason
    return {"step": step, "train/skipped_steps": run.skipped_steps, "train/ppo_epochs_run": 0,
            "train/lr": run.optimizer.param_groups[0]["lr"]}


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
                say(f"(train.log: cannot write: {exc.strerror or exc}; lines go to the terminal only)")
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
        name = key[len("eval/"):].removesuffix("/score")
        if key.endswith("/elo"):
            parts.append(f"{name} {value:+.0f} [{lo:+.0f}, {hi:+.0f}]")
        else:
            parts.append(f"{name} {value:.3f} [{lo:.3f}, {hi:.3f}]")
    took = metrics.get("time/eval")
    return (f"eval step {step}: " + ("; ".join(parts) or "no metrics with intervals")
            + (f" ({took:.0f} s)" if took is not None else ""))


def run_eval(run: Run, step: int) -> dict[str, float]:
    """Play the game's evaluation opponents; ``eval/<opponent>/...`` metrics."""
    from chessrl.match import play_match

    t0 = time.perf_counter()
    out: dict[str, float] = {}
    matches: dict[str, tuple[float, int]] = {}
    for name, opponent in run.game.eval_opponents().items():
        n = run.config.trainer.eval_games
        starts = run.game.eval_states((n + 1) // 2, np.random.default_rng([run.config.seed, step]))
        res = play_match(run.game, run.policy, opponent, games=n, temperature=run.config.rollout.temperature,
                         greedy=True, seed=run.config.seed + step, starts=starts)
        out.update(res.metrics(f"eval/{name}"))
        matches[name] = (res.score, res.games)
    bench = getattr(run.game, "benchmark", None)  # Game.benchmark; a duck-typed game may lack it
    if bench is not None:
        out.update({f"eval/{k}": float(v) for k, v in bench(run.policy, matches).items()})
    reports = run.hook("chessrl_eval_end", metrics=out, step=step)
    del reports
    out["time/eval"] = time.perf_counter() - t0
    return out
