"""Building a run: the game, env, policies, loss, optimiser and regularisers of a config, and
the run's checkpoint state (:func:`state_dict` / :func:`load_state`).

:func:`build_run` fails before anything is written (a missing engine, a bad plugin option), so
the loop (:mod:`chessrl.trainer`) calls it before it touches the run directory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import torch

from chessrl import checkpoint, distributed, pluginmanager
from chessrl.config import Config, config_to_dict
from chessrl.env import BoardGameEnv
from chessrl.errors import RunFailure, UserError, first_line, out_of_memory
from chessrl.game import Game
from chessrl.loss import GroupPolicyLoss
from chessrl.policy import build_policy, log_probs
from chessrl.regularisers import Coefficients, Regularisers, RunView

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel


@dataclass
class Run:
    """Everything one training run holds; plugins see a :class:`RunView` of it (:meth:`view`)."""

    config: Config
    run_dir: Path
    game: Game
    env: BoardGameEnv
    policy: torch.nn.Module
    old_policy: torch.nn.Module
    ref_policy: torch.nn.Module | None
    loss: GroupPolicyLoss
    optimizer: torch.optim.Optimizer
    coefs: Coefficients
    plugins: Regularisers  # the enabled regularisers, in TOML order (their own plugin manager)
    plugin_names: list[str]
    generator: torch.Generator
    device: torch.device
    log: Callable[[str], None] = print
    skipped_steps: int = 0
    consecutive_skips: int = 0  # skipped steps in a row; max_consecutive_skips stops the run
    skip_reason: str | None = None  # why the current step was skipped, when a check knows
    last_sync: int = 0
    stop_reason: str | None = None
    dist: distributed.Dist = field(default_factory=distributed.Dist)  # rank, world size
    ddp_model: DistributedDataParallel | None = None  # the policy's DDP wrapper under torchrun

    def hook(self, name: str, **kwargs) -> list[tuple[str, Any]]:
        """Call a run hook on the regularisers through pluggy: ``[(plugin, result)]``."""
        return self.plugins.hook(name, **kwargs)

    def view(self, step: int) -> RunView:
        """What the plugins see of this run at ``step``."""
        return RunView(
            config=self.config,
            run_dir=self.run_dir,
            game=self.game,
            policy=self.policy,
            coefs=self.coefs,
            device=self.device,
            step=step,
            log=self.log,
            full=self,
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "device = 'cuda' but no CUDA device is available; use device = 'cpu' or 'auto'"
        )
    return torch.device(name)


def make_game(cfg: Config, seed: int) -> Game:
    reg = pluginmanager.games()[cfg.env.name]
    return reg.obj(cfg.env.options, seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, rank, step)."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)
    return int(state[0] % (2**63))


def derived_seed(seed: int, rank: int, step: int, purpose: int) -> int:
    """A seed for the game's generators from (run seed, rank, step, purpose: 1 = step,
    2 = eval)."""
    state = np.random.SeedSequence([seed, rank, step, purpose]).generate_state(1, dtype=np.uint64)
    return int(state[0] % (2**63))


def build_run(
    cfg: Config,
    run_dir: Path,
    log: Callable[[str], None] = print,
    dist: distributed.Dist | None = None,
) -> Run:
    """Construct game, env, policies, loss, optimiser and the enabled plugins of a config."""
    dist = dist or distributed.Dist()
    device = distributed.device_for(dist, resolve_device(cfg.device))
    torch_gen = torch.Generator().manual_seed(rank_seed(cfg.seed, dist.rank))
    game = make_game(cfg, rank_seed(cfg.seed, dist.rank))
    try:
        env = BoardGameEnv(
            game,
            batch_size=(cfg.rollout.roots, cfg.rollout.group_size),
            device="cpu",
            seed=rank_seed(cfg.seed, dist.rank),
        )
        with torch.random.fork_rng(devices=[]):  # the init seed must not touch the global RNG
            torch.manual_seed(cfg.seed)
            policy = build_policy(cfg.policy, game).to(device)
        if cfg.policy.cpu_bf16 and not policy.cpu_bf16 and device.type == "cpu":
            log(
                "policy.cpu_bf16 is ignored: this CPU has no native bf16 matrix instructions "
                "(AMX or AVX512-BF16), so the policy runs in float32"
            )
        policy.eval()  # no dropout or batch statistics exist, and none may sneak in
        coefs = Coefficients()
        pm = Regularisers.from_config(cfg.plugins, coefs)
        names = pm.names
        ref = copy.deepcopy(policy).requires_grad_(False) if pm.needs_reference else None
        old = policy if cfg.trainer.sync_every == 1 else copy.deepcopy(policy).requires_grad_(False)
        ddp_model = None
        if dist.enabled:  # every rank starts from rank 0's weights; backward all-reduces gradients
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            ddp_model = DistributedDataParallel(policy, device_ids=ids)
        loss = GroupPolicyLoss(
            ddp_model or policy,
            temperature=cfg.rollout.temperature,
            clip_low=cfg.loss.clip_low,
            clip_high=cfg.loss.clip_high,
            aggregation=cfg.loss.aggregation,
        )
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            params,
            lr=cfg.trainer.lr,
            weight_decay=cfg.trainer.weight_decay,
            betas=cast(tuple[float, float], tuple(cfg.trainer.betas)),  # config: length 2
        )
    except BaseException as exc:
        game.close()
        if out_of_memory(exc):
            raise UserError(
                f"the configured run does not fit in memory ({first_line(exc, 120)}): lower "
                f"rollout.roots x rollout.group_size (now {cfg.rollout.roots} x "
                f"{cfg.rollout.group_size}) or the policy sizes (policy.d_model "
                f"{cfg.policy.d_model}, policy.d_ff {cfg.policy.d_ff}, policy.n_layers "
                f"{cfg.policy.n_layers})"
            ) from None
        raise
    return Run(
        cfg,
        run_dir,
        game,
        env,
        policy,
        old,
        ref,
        loss,
        opt,
        coefs,
        pm,
        names,
        torch_gen,
        device,
        log,
        dist=dist,
        ddp_model=ddp_model,
    )


def state_dict(run: Run, step: int) -> dict[str, Any]:
    """Everything a checkpoint holds (docs/training.md#checkpoints-and-resume)."""
    return checkpoint.policy_state(
        run.policy,
        game=run.config.env.name,
        config=config_to_dict(run.config),
        step=step,
        optimizer=run.optimizer.state_dict(),
        old_policy=None if run.old_policy is run.policy else run.old_policy.state_dict(),
        ref_policy=None if run.ref_policy is None else run.ref_policy.state_dict(),
        coefficients=run.coefs.state_dict(),
        plugins=run.plugins.state_dict(),
        skipped_steps=run.skipped_steps,
        consecutive_skips=run.consecutive_skips,
        last_sync=run.last_sync,
        world_size=run.dist.world,  # processes that trained it: a resume must use as many
    )


_STATE_KEYS = (
    "step",
    "policy",
    "optimizer",
    "coefficients",
    "plugins",
    "skipped_steps",
    "last_sync",
)


def load_state(run: Run, state: dict[str, Any], path: Path | str = "checkpoint") -> int:
    """Restore a checkpoint's state into ``run``; return its step. A file that is not a full
    training checkpoint of this game and model is a one-line :class:`UserError` naming it."""
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise UserError(
            f"{path}: not a training checkpoint (missing {', '.join(missing)}); "
            "resume needs a file written by 'chessrl run' (policy-only files go to "
            "policy.init_checkpoint)"
        )
    world = state.get("world_size", 1)
    if world != run.dist.world:
        how = (
            f"torchrun --nproc_per_node={world} -m chessrl"
            if world > 1
            else "chessrl (one process)"
        )
        raise UserError(
            f"{path}: trained by {world} process(es), resumed by {run.dist.world}: each process "
            f"draws rollout.roots roots, so the batch and the experiment would change; resume with "
            f"{how}, or start a new run from its weights with policy.init_checkpoint"
        )
    if state.get("game", run.config.env.name) != run.config.env.name:
        raise UserError(
            f"{path}: a checkpoint of game {state['game']!r}, but this run plays "
            f"{run.config.env.name!r}; a run cannot change its game"
        )
    try:
        run.policy.load_state_dict(state["policy"])
        run.optimizer.load_state_dict(state["optimizer"])
        if state.get("old_policy") is not None and run.old_policy is not run.policy:
            run.old_policy.load_state_dict(state["old_policy"])
        if state.get("ref_policy") is not None and run.ref_policy is not None:
            run.ref_policy.load_state_dict(state["ref_policy"])
        run.coefs.load_state_dict(state["coefficients"])
        run.plugins.load_state_dict(state["plugins"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"{path}: does not fit this run's model, optimiser or plugins ({first_line(exc)}); "
            "resume with the config the run was started with"
        ) from None
    run.skipped_steps, run.last_sync = state["skipped_steps"], state["last_sync"]
    run.consecutive_skips = state.get("consecutive_skips", 0)
    return int(state["step"])


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the policy and optimiser tensors in ``state`` that hold a NaN or an infinity."""

    def bad(v: Any) -> bool:
        return torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())

    names = [f"policy.{k}" for k, v in state["policy"].items() if bad(v)]
    for pid, s in state["optimizer"].get("state", {}).items():
        names += [f"optimizer.{pid}.{k}" for k, v in s.items() if bad(v)]
    return names


def save_checkpoint(
    run: Run, ckpt_dir: Path, step: int, *, keep: int = 1, initial: bool = False
) -> str | None:
    """Write the step's checkpoint unless the state is unhealthy; return why it was not written.

    Unhealthy: a policy or optimiser tensor that is not finite, or a policy whose logits on
    a few start positions are not finite (finite but exploded weights). The previous
    checkpoint then stays the resume point. A disk failure is a :class:`RunFailure`.
    """
    state = state_dict(run, step)
    bad = nonfinite_tensors(state)
    if bad:
        return f"{len(bad)} tensor(s) are not finite ({', '.join(bad[:3])})"
    if not _logits_finite(run):
        return "the policy's logits are not finite"
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
