"""The GRPO step: :func:`grpo_step` is the algorithm, top to bottom, on one screen.

old-policy sync (every N steps) -> rollout -> advantages -> training batch ->
``ppo_steps`` x (loss with plugin terms -> :class:`Optimise`) -> metrics -> plugin updates.

:class:`Optimise` owns everything between a loss and a kept optimiser step (the backward paths,
the loss budget, DDP, the non-finite checks, clipping); :class:`~chessrl.timing.Timer` owns the
``time/*`` metrics; the ``_*metrics`` helpers below the step build the rest of the row.
"""

from __future__ import annotations

import copy
from typing import Callable, cast

import numpy as np
import torch
from tensordict import TensorDict

from chessrl import distributed
from chessrl import keys as K
from chessrl.advantage import rollout_advantages
from chessrl.budget import backward_with_budget, value_budget
from chessrl.loss import loss_entries
from chessrl.policy import log_probs
from chessrl.regularisers import report_metrics
from chessrl.rollout import RolloutTimes, collect
from chessrl.run import Run, rank_seed
from chessrl.timing import Timer

#: what one call of :func:`loss_terms` returns: ``(out, terms, raws, coefs)``
LossTerms = tuple[TensorDict, dict[str, torch.Tensor], dict[str, float], dict[str, float]]


def grpo_step(run: Run, step: int) -> dict[str, float]:
    """One GRPO step; returns its metrics row (docs/metrics.md)."""
    cfg, timer = run.config, Timer()
    with timer("step"):
        engine_t0, engine_stats0 = run.game.engine_seconds, run.game.stats()
        run.coefs.begin_step()
        # each step's randomness derives from (seed, rank, step): a resumed run replays exactly
        run.generator.manual_seed(rank_seed(cfg.seed, run.dist.rank, step))
        run.env.set_seed(rank_seed(cfg.seed, run.dist.rank, step), static_seed=True)
        age = sync_old_policy(run, step)

        with timer("rollout"):  # R roots x G trajectories x T plies, sampled from the old policy
            td = rollout(run, timer)
        # group-relative advantages, per player, broadcast to that player's plies
        adv = cfg.advantage
        returns, zero = rollout_advantages(td, adv.returns, adv.scale, adv.eps)
        with timer("policy"):  # trained plies only, with old (and reference) log-probs
            batch = training_batch(run, td)

        measure = bool(cfg.trainer.budget_every) and step % cfg.trainer.budget_every == 0
        optimise, epochs = Optimise(run, timer, measure), []
        with timer("learner"):  # PPO epochs: loss with plugin terms -> backward -> clip -> step
            for _ in range(cfg.trainer.ppo_steps if len(batch) else 0):
                done = optimise(lambda: loss_terms(run, batch))
                if done is None:
                    break
                epochs.append(_epoch_row(*done, batch))
        run.skipped_steps += optimise.skipped

        # metrics, then plugin updates (controllers read this step's metrics)
        m = _step_metrics(run, td, batch, returns, zero, epochs, age) | optimise.budget
        m = distributed.mean_metrics(run.dist, m)  # every rank's controllers see the same numbers
        m.update(_plugin_updates(run, m, step))
        m.update(_engine_metrics(engine_stats0, run.game.stats()))
        timer.add("reward_engine", run.game.engine_seconds - engine_t0)
    return m | timer.metrics()


def sync_old_policy(run: Run, step: int) -> int:
    """Refresh the old policy every ``sync_every`` steps; return its age in steps."""
    every = run.config.trainer.sync_every
    if every > 1 and (step - 1) % every == 0:
        run.old_policy.load_state_dict(run.policy.state_dict())
        run.last_sync = step
    return 0 if every == 1 else step - run.last_sync


def rollout(run: Run, timer: Timer) -> TensorDict:
    """The step's ``[R, G, T]`` rollout (docs/rollouts.md); its policy time goes to ``policy``."""
    ro, times = run.config.rollout, RolloutTimes()
    td = collect(
        run.env,
        run.old_policy,
        plies=ro.plies,
        temperature=ro.temperature,
        opponent=ro.opponent,
        train_plies=ro.train_plies,
        teacher_forcing_prob=ro.teacher_forcing_prob,
        teacher_forcing_depth=ro.teacher_forcing_depth,
        generator=run.generator,
        times=times,
        expert_members=ro.expert_members,
        score="last" if run.config.advantage.returns == "terminal" else "every_ply",
    )
    timer.add("policy", times.policy)
    return td


_BATCH_KEYS = (
    "observation",
    "action_mask",
    "action",
    "advantage",
    "traj_index",
    "sample_log_prob",
    "loss_mask",
)


def training_batch(run: Run, td: TensorDict) -> TensorDict:
    """The trained plies of a rollout, flat ``[N]`` on the run's device, with the old (and the
    reference) policy's log-probs over all actions, ``old_log_probs_all`` [N, A] (and
    ``ref_log_probs_all``). Only trained plies: a masked ply would cost a forward and a backward
    for nothing; ``loss_mask`` (all True here) still tells the loss which plies count."""
    trained = td["loss_mask"].reshape(-1)
    batch = td.select(*_BATCH_KEYS).reshape(-1)[trained].to(run.device)
    obs, legal, temperature = (
        batch["observation"],
        batch["action_mask"],
        run.config.rollout.temperature,
    )
    with torch.no_grad():
        batch["old_log_probs_all"] = log_probs(run.old_policy, obs, legal, temperature)
        if run.ref_policy is not None:
            batch["ref_log_probs_all"] = log_probs(run.ref_policy, obs, legal, temperature)
    return batch


class Optimise:
    """One optimiser step per call, on the sum of the loss output's ``loss_*`` entries.

    It owns the three backward paths: plain ``backward()``; every ``budget_every`` steps the
    loss budget, one backward per term (:func:`~chessrl.budget.backward_with_budget`, whose
    per-term gradients sum to the total gradient); and under DDP that measurement taken
    locally inside ``no_sync()`` before the synchronised backward. It owns the non-finite skip
    (a loss not finite on any rank, a gradient norm not finite, an optimiser step leaving
    non-finite weights: undone by :func:`optimizer_step`) and gradient clipping.

    A call returns ``(out, total, grad_norm)`` for the kept step, or None when a check stopped
    it (``skipped`` is then True; the caller runs no further epoch). ``budget`` holds the
    ``budget/*`` metrics of the step's last PPO epoch (the only one when ``ppo_steps = 1``):
    on the first epoch the ratio is exactly 1 and the old policy is the current one, so terms
    that act through the ratio or a KL to the old policy are 0 there and would look inert;
    ``time/budget`` goes to ``timer``.
    """

    def __init__(self, run: Run, timer: Timer, measure: bool) -> None:
        self.run, self.timer, self.measure = run, timer, measure
        self.params = [p for p in run.policy.parameters() if p.requires_grad]
        self.budget: dict[str, float] = {}
        self.skipped = False
        self.epochs = 0

    def __call__(
        self, loss: Callable[[], LossTerms]
    ) -> tuple[TensorDict, torch.Tensor, torch.Tensor] | None:
        run = self.run
        last = self.epochs == run.config.trainer.ppo_steps - 1
        measure = last and self.measure
        run.optimizer.zero_grad(set_to_none=True)
        if measure and run.dist.enabled:
            # DDP syncs gradients in backward(); per-term gradients are a local measurement
            assert run.ddp_model is not None  # build_run wraps the policy whenever DDP is on
            with self.timer("budget"), run.ddp_model.no_sync():
                terms = loss_entries(loss()[0])
                self.budget.update(backward_with_budget(terms, self.params, accumulate=False))
        out, _, raws, coefs = loss()
        terms = loss_entries(out)
        total = cast(torch.Tensor, sum(terms.values()))  # loss_objective: never empty
        if not distributed.all_true(run.dist, bool(torch.isfinite(total))):
            self._skip()
            return None
        if last:
            values = {k: float(v.detach()) for k, v in terms.items()}
            self.budget.update(value_budget(values, coefs, raws))
        if measure and not run.dist.enabled:
            with self.timer("budget"):  # the per-term gradients sum to the total gradient
                self.budget.update(backward_with_budget(terms, self.params))
        else:
            total.backward()
        clip = run.config.trainer.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if not torch.isfinite(grad_norm):  # gradients are all-reduced: every rank agrees
            run.optimizer.zero_grad(set_to_none=True)
            self._skip()
            return None
        if not optimizer_step(run, self.params):  # a step leaving non-finite weights is undone
            self._skip()
            return None
        self.epochs += 1
        return out, total, grad_norm

    def _skip(self) -> None:
        self.skipped = True


def optimizer_step(run: Run, params: list[torch.nn.Parameter]) -> bool:
    """``run.optimizer.step()``, undone if it leaves a parameter NaN or infinite (or overflows):
    the parameters and the optimiser state return to what they were before it, and
    ``run.skip_reason`` says why. True when the step was kept."""
    before = [p.detach().clone() for p in params]
    opt_before = copy.deepcopy(run.optimizer.state_dict())
    try:
        run.optimizer.step()
        finite = (
            bool(torch.stack([torch.isfinite(p).all() for p in params]).all()) if params else True
        )
    except RuntimeError as exc:  # e.g. "value cannot be converted to type float without overflow"
        if "overflow" not in str(exc):
            raise
        finite = False
    if distributed.all_true(run.dist, finite):
        return True
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    run.optimizer.load_state_dict(opt_before)
    run.skip_reason = "the optimiser step made parameters non-finite (undone)"
    return False


# ------------------------------------------------------------------------------------------
# plugin touch points: the loss terms and the end-of-step updates
# ------------------------------------------------------------------------------------------


def loss_terms(run: Run, batch: TensorDict) -> LossTerms:
    """The loss module's output plus every plugin's terms: ``(out, terms, raws, coefs)``.

    ``terms[name]`` is the coefficient-weighted, differentiable term (``objective`` first);
    each is also written into ``out`` as ``loss_<name>``.
    """
    out = run.loss(batch)
    terms = {K.OBJECTIVE: out["loss_objective"]}
    raws, coefs = {K.OBJECTIVE: float(out["loss_objective"].detach())}, {K.OBJECTIVE: 1.0}
    for term in run.plugins.loss_terms(out, batch, taken=list(terms)):
        terms[term.name] = term.coef * term.raw
        out[f"loss_{term.name}"] = terms[term.name]
        raws[term.name], coefs[term.name] = float(term.raw.detach()), float(term.coef)
    return out, terms, raws, coefs


def _plugin_updates(run: Run, m: dict[str, float], step: int) -> dict[str, float]:
    """The controllers adjust the next step's coefficients; each plugin's end-of-step report
    becomes ``plugin/<name>/...`` metrics (and maybe a message, or a reason to stop)."""
    run.plugins.adjust_coefficients(m, step)
    end = run.plugins.step_end(m, step)
    for line in end.messages:
        run.log(line)
    if end.stop:
        run.stop_reason = end.stop
    return end.metrics


_plugin_metrics = report_metrics  # the old name of a report's metrics


# ------------------------------------------------------------------------------------------
# the metrics row (docs/metrics.md)
# ------------------------------------------------------------------------------------------

_EPOCH_KEYS = (
    "loss_objective",
    "clip_fraction",
    "ratio_mean",
    "ratio_max",
    "ratio_min",
    "ess",
    "entropy",
    "entropy_sample",
    "kl_old_exact",
    "kl_old_k1",
    "kl_old_k3",
    "kl_ref_exact",
    "kl_ref_k1",
    "kl_ref_k3",
)
_KL_KEYS = ("kl_old_exact", "kl_old_k1", "kl_old_k3", "kl_ref_exact", "kl_ref_k1", "kl_ref_k3")


def _taken(batch: TensorDict, key: str) -> torch.Tensor:
    """``batch[key]`` [N, A] at the taken actions: [N]."""
    return batch[key].gather(-1, batch["action"][:, None]).squeeze(-1)


def _epoch_row(
    out: TensorDict, total: torch.Tensor, grad_norm: torch.Tensor, batch: TensorDict
) -> dict[str, float]:
    row = {k: float(out[k].detach()) for k in _EPOCH_KEYS if k in out.keys()}
    old = _taken(batch, "old_log_probs_all")
    row["maxdev"] = float((out["log_probs"].detach() - old).exp().sub(1).abs().max())
    row["loss"], row["grad_norm"] = float(total.detach()), float(grad_norm)
    return row


def _train_metrics(
    run: Run, rows: list[dict[str, float]], n_trained: int, age: int
) -> dict[str, float]:
    """``train/*``: the PPO epochs' numbers (means over epochs, first or last where noted)."""
    m: dict[str, float] = {
        K.TRAIN_LR: run.optimizer.param_groups[0]["lr"],
        K.TRAIN_PPO_EPOCHS_RUN: len(rows),
        K.TRAIN_SKIPPED_STEPS: run.skipped_steps,
        K.TRAIN_TRAINED_PLIES: n_trained,
        K.TRAIN_OLD_POLICY_AGE: age,
    }
    if not rows:
        return m

    def mean(k: str) -> float:
        return float(np.mean([r[k] for r in rows]))

    first, last = rows[0], rows[-1]
    m.update(
        {
            K.TRAIN_LOSS: mean("loss"),
            K.TRAIN_LOSS_OBJECTIVE: mean("loss_objective"),
            K.TRAIN_CLIP_FRACTION: mean("clip_fraction"),
            K.TRAIN_RATIO_MEAN: mean("ratio_mean"),
            K.TRAIN_RATIO_MAX: max(r["ratio_max"] for r in rows),
            K.TRAIN_RATIO_MIN: min(r["ratio_min"] for r in rows),
            K.TRAIN_RATIO_FIRST_EPOCH: first["ratio_mean"],
            K.TRAIN_RATIO_FIRST_EPOCH_MAXDEV: first["maxdev"],
            K.TRAIN_ESS: mean("ess"),
            K.TRAIN_ENTROPY: first["entropy"],
            K.TRAIN_ENTROPY_SAMPLE: first["entropy_sample"],
            K.TRAIN_GRAD_NORM: last["grad_norm"],
        }
    )
    m.update({f"train/{k}": last[k] for k in _KL_KEYS if k in last})
    return m


def _rollout_metrics(
    td: TensorDict, batch: TensorDict, returns: torch.Tensor, zero: torch.Tensor
) -> dict[str, float]:
    """``rollout/*``: rewards, returns, group spread, game lengths, log-prob drift."""
    trained = td["loss_mask"]
    r = td["next", "reward"].squeeze(-1)
    root_ret = returns[..., 0].reshape(-1)
    drift = (_taken(batch, "old_log_probs_all") - batch["sample_log_prob"]).abs()
    return {
        K.ROLLOUT_REWARD_MEAN: float(r[trained].mean()) if trained.any() else 0.0,
        K.ROLLOUT_RETURN_MEAN: float(root_ret.mean()),
        K.ROLLOUT_RETURN_STD: float(root_ret.std(unbiased=False)),
        K.ROLLOUT_RETURN_BEST: float(root_ret.max()),
        K.ROLLOUT_RETURN_P90: float(root_ret.quantile(0.9)),
        K.ROLLOUT_ZERO_STD_GROUPS: int(zero[..., 0].sum()),
        K.ROLLOUT_ZERO_STD_FRAC: float(zero[..., 0].float().mean()),
        K.ROLLOUT_TRAINED_PLIES: int(trained.sum()),
        K.ROLLOUT_GAME_LEN_MEAN: float(td["valid"].sum(-1).float().mean()),
        K.ROLLOUT_TERMINATED_FRAC: float(td["next", "terminated"][..., -1, 0].float().mean()),
        K.ROLLOUT_TEACHER_FORCED_FRAC: float(td["forced_traj"][..., 0].float().mean()),
        **_expert_metrics(td),
        K.ROLLOUT_LOGPROB_DRIFT: float(drift.max()) if len(batch) else 0.0,
    }


def _step_metrics(
    run: Run,
    td: TensorDict,
    batch: TensorDict,
    returns: torch.Tensor,
    zero: torch.Tensor,
    rows: list[dict[str, float]],
    age: int,
) -> dict[str, float]:
    return _train_metrics(run, rows, len(batch), age) | _rollout_metrics(td, batch, returns, zero)


def _expert_metrics(td: TensorDict) -> dict[str, float]:
    """With ``expert_members``: how the engine's root move fared in its groups."""
    expert = td.get("expert_ply", None)
    if expert is None or not bool(expert.any()):
        return {}
    return {
        K.ROLLOUT_EXPERT_ADVANTAGE: float(td["advantage"][expert].mean()),
        K.ROLLOUT_EXPERT_PLIES: int(expert.sum()),
    }


def _engine_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """This step's reward-engine work: searches run, cache/dedup hit rate, engine restarts."""
    if "evaluations" not in after:
        return {}
    keys = ("evaluations", "hits", "misses", "restarts")
    d = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    looked = d["hits"] + d["misses"]
    return {
        K.ROLLOUT_REWARD_SEARCHES: d["evaluations"],
        K.ROLLOUT_REWARD_CACHE_HIT_RATE: d["hits"] / looked if looked else 0.0,
        K.ROLLOUT_ENGINE_RESTARTS: d["restarts"],
    }
