"""Pretraining's supervised loop: cross-entropy over legal moves against soft multi-PV targets,
held-out agreement with Stockfish, and the checkpoint (the core's policy builder and writer).

No global random generator is seeded or drawn from: the policy init runs under ``fork_rng``
and a ``torch.Generator(seed)`` orders the batches."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from chessrl import checkpoint
from chessrl.envs.chess import encoding as enc
from chessrl.envs.chess.game import ChessGame
from chessrl.envs.chess.options import ChessOptions
from chessrl.envs.chess.pretrain_config import LabelConfig, PretrainConfig
from chessrl.envs.chess.pretrain_data import epd_key, hash01, soft_targets, tokens_for
from chessrl.errors import UserError
from chessrl.policy import Policy, build_policy, log_probs
from chessrl.run import resolve_device
from chessrl.schema import to_dict
from chessrl.stats import wilson


def new_policy(cfg: PretrainConfig) -> Policy:
    """The configured policy, by the trainer's builder (sizes, head, init checkpoint, frozen
    layers), initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        game = ChessGame(ChessOptions(reward="none", features=cfg.env.features))
        return build_policy(cfg.policy, game)


class Tensors:
    """A split of the data as tensors: tokens, masks, multi-PV actions and target probs."""

    def __init__(self, data: dict[str, np.ndarray], rows: np.ndarray, labels: LabelConfig):
        self.tokens = torch.from_numpy(data["tokens"][rows].astype(np.int64))
        mask = np.unpackbits(data["mask"][rows], axis=1, count=enc.N_ACTIONS)
        self.mask = torch.from_numpy(mask.astype(bool))
        acts = data["actions"][rows].astype(np.int64)
        self.probs = torch.from_numpy(
            soft_targets(
                data["cp"][rows], data["actions"][rows], labels.temperature_cp, labels.best_weight
            )
        )
        self.actions = torch.from_numpy(np.where(acts >= 0, acts, 0))
        self.best = self.actions[:, 0]

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, idx: torch.Tensor, device: torch.device):
        target = torch.zeros(len(idx), enc.N_ACTIONS).scatter_add_(
            1, self.actions[idx], self.probs[idx]
        )
        return (
            self.tokens[idx].to(device),
            self.mask[idx].to(device),
            target.to(device),
            self.best[idx].to(device),
        )


def split(cfg: PretrainConfig, data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the distinct positions (first occurrence), as (train, held out): a salted hash
    of the position decides, so a position never sits on both sides."""
    keys = [epd_key(f) for f in data["fen"]]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    unique = np.array(sorted(first.values()), dtype=np.int64)
    salt = f"{cfg.seed}:"
    held = np.array(
        [hash01(salt + keys[i]) < cfg.train.holdout_fraction for i in unique], dtype=bool
    )
    if held.all() or not held.any():
        raise UserError(
            f"{len(unique)} distinct positions give an empty train or hold-out "
            "split; raise [data] positions or change [train] holdout_fraction"
        )
    return unique[~held], unique[held]


def loss_and_logp(policy: torch.nn.Module, tokens, mask, target):
    lp = log_probs(policy, tokens, mask, 1.0)
    loss = -(target * torch.where(mask, lp, torch.zeros_like(lp))).sum(-1).mean()
    return loss, lp


@torch.no_grad()
def evaluate(
    policy: torch.nn.Module, split: Tensors, device: torch.device, batch_size: int = 512
) -> dict[str, float]:
    """Held-out loss and top-1 / top-5 agreement with Stockfish's best move."""
    total = top1 = top5 = 0.0
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)))
        tokens, mask, target, best = split.batch(idx, device)
        loss, lp = loss_and_logp(policy, tokens, mask, target)
        total += float(loss) * len(idx)
        top1 += float((lp.argmax(-1) == best).sum())
        top5 += float((lp.topk(5, dim=-1).indices == best[:, None]).any(-1).sum())
    n = max(len(split), 1)
    lo1, hi1 = wilson(top1, len(split))
    lo5, hi5 = wilson(top5, len(split))
    return {
        "loss": total / n,
        "top1": top1 / n,
        "top5": top5 / n,
        "top1_lo": lo1,
        "top1_hi": hi1,
        "top5_lo": lo5,
        "top5_hi": hi5,
        "positions": len(split),
    }


def random_baseline(split: Tensors) -> dict[str, float]:
    """What a uniformly random legal mover scores, exactly (expected values)."""
    n_legal = split.mask.sum(-1).double()
    # uniform over legal moves: every target move has log-prob -log(n), so the loss is log(n)
    return {
        "loss": float(torch.log(n_legal).mean()),
        "top1": float((1.0 / n_legal).mean()),
        "top5": float((torch.clamp(n_legal, max=5) / n_legal).mean()),
    }


def _lr_schedule(peak: float, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at step ``total``."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        frac = (step - warmup) / max(total - warmup, 1)
        return peak * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    return lr_at


def train_policy(
    cfg: PretrainConfig, data: dict[str, np.ndarray], log: Callable[[str], None] = print
) -> tuple[Policy, dict[str, Any]]:
    """Train the configured policy on ``data``; return it and the training summary."""
    t = cfg.train
    device = resolve_device(cfg.device)
    train_rows, test_rows = split(cfg, data)
    data = {**data, "tokens": tokens_for(data, cfg.env.features)}
    train_split = Tensors(data, train_rows, cfg.labels)
    test_split = Tensors(data, test_rows, cfg.labels)
    policy = new_policy(cfg).to(device)
    save_checkpoint(cfg, policy, {"initial": True}, initial_path(cfg.output))
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_split) / t.batch_size)
    total = steps_per_epoch * t.epochs
    lr_at = _lr_schedule(t.lr, t.warmup_steps, total)

    history = []
    policy.eval()  # no dropout exists; the mode never changes the output
    initial = evaluate(policy, test_split, device)
    baseline = random_baseline(test_split)
    log(
        f"hold-out before training: loss {initial['loss']:.3f} top-1 {initial['top1']:.3f} "
        f"top-5 {initial['top5']:.3f}; a random mover: top-1 {baseline['top1']:.3f} "
        f"top-5 {baseline['top5']:.3f}"
    )
    bar = None
    if t.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=cfg.name, unit="batch", dynamic_ncols=True, file=sys.stderr)
    step = 0
    t0 = time.perf_counter()
    try:
        for epoch in range(1, t.epochs + 1):
            perm = torch.randperm(len(train_split), generator=gen)
            running = 0.0
            for b in range(steps_per_epoch):
                idx = perm[b * t.batch_size : (b + 1) * t.batch_size]
                tokens, mask, target, _ = train_split.batch(idx, device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                loss, _ = loss_and_logp(policy, tokens, mask, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                running += loss.item()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss):.3f}")
            held_out = evaluate(policy, test_split, device)
            row = {
                "epoch": epoch,
                "train_loss": running / steps_per_epoch,
                **{f"heldout_{k}": v for k, v in held_out.items()},
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            log(
                f"epoch {epoch}/{t.epochs}: train loss {row['train_loss']:.3f}, hold-out loss "
                f"{held_out['loss']:.3f} top-1 {held_out['top1']:.3f} "
                f"top-5 {held_out['top5']:.3f}"
            )
    finally:
        if bar is not None:
            bar.close()
    final = evaluate(policy, test_split, device)
    return policy, {
        "heldout": final,
        "initial": initial,
        "random": baseline,
        "history": history,
        "train_positions": len(train_split),
        "heldout_positions": len(test_split),
        "distinct_positions": len(train_rows) + len(test_rows),
        "steps": step,
    }


def initial_path(output: str | Path) -> Path:
    """Where the untrained policy is saved: ``<output stem>.initial.pt`` beside the checkpoint
    (``chessrl eval --baselines`` plays it as the "initial" baseline)."""
    out = Path(output)
    return out.with_name(f"{out.stem}.initial.pt")


def checkpoint_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The checkpoint's ``config``: a training config's ``name``, ``seed``, ``env`` (chess's
    options) and ``policy`` (the sizes, no init checkpoint), and the whole pretraining config
    under ``pretrain``."""
    policy = {**to_dict(cfg.policy), "init_checkpoint": ""}
    pretrain = {k: v for k, v in to_dict(cfg).items() if k != "env"}
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "env": {"name": "chess", **to_dict(cfg.env)},
        "policy": policy,
        "pretrain": pretrain,
    }


def save_checkpoint(
    cfg: PretrainConfig, policy: Policy, summary: dict[str, Any], path: Path | None = None
) -> Path:
    """Write ``policy`` with the core's checkpoint writer (step 0, the summary under
    ``pretrain``); at ``output`` (no ``path``), also the summary as ``<stem>.json``."""
    out = checkpoint.write_policy(
        Path(path or cfg.output),
        policy,
        game="chess",
        config=checkpoint_config(cfg),
        pretrain=summary,
    )
    if path is None:
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return out
