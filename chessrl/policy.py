"""The policy: a transformer over observation tokens with a masked categorical head.

:func:`log_probs` is the one function that turns a policy, observations, legal-action masks
and a temperature into log-probabilities. Rollouts sample from it and the loss recomputes
with it, so the sampling and the training distribution cannot drift apart (the analysed run
sampled at temperature 1.3 and trained at 1.0, with dropout on). The network has no dropout
and no batch statistics: its output does not depend on train/eval mode or on batch size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chessrl.errors import NonFinite, UserError


class Block(nn.Module):
    """Pre-norm transformer block (no dropout)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = (
            self.qkv(self.norm1(x))
            .view(n, length, 3, self.n_heads, d // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # bf16 on a CPU: the fused kernel's backward is ~4x slower than two matmuls
            scores = torch.matmul(q, k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
            a = torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(n, length, d))
        return x + self.ff(self.norm2(x))


class PairHead(nn.Module):
    """Scores an action by the two tokens it connects:
    ``<q(x_src) + e_kind, k(x_dst)> / sqrt(h) + b_a``.

    ``structure`` is int64 [A, 3]: each action's source token, target token and kind (a chess
    move's from-square, to-square and promotion piece; a placement's cell twice). A move's
    logit is then a function of the two squares' contextual features, shared by every move
    between squares alike, instead of a separate row of a 1968-wide linear layer: what the
    network learns about one move transfers to every move of the same shape. The structure is
    a buffer, so a checkpoint carries it.
    """

    structure: torch.Tensor  # the registered buffer (nn.Module's stubs type attributes loosely)

    def __init__(
        self,
        d_model: int,
        obs_len: int,
        n_actions: int,
        dim: int,
        n_kinds: int,
        structure: torch.Tensor | None = None,
    ):
        super().__init__()
        self.obs_len, self.dim = obs_len, dim
        self.q = nn.Linear(d_model, dim)
        self.k = nn.Linear(d_model, dim)
        self.kind = nn.Embedding(n_kinds, dim)
        nn.init.normal_(self.kind.weight, std=0.02)
        self.bias = nn.Parameter(torch.zeros(n_actions))
        if structure is None:
            structure = torch.zeros(n_actions, 3, dtype=torch.long)
        self.register_buffer("structure", torch.as_tensor(structure, dtype=torch.long).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.q(x), self.k(x)  # [N, L, h]
        src, dst, kind = self.structure.unbind(-1)
        pairs = torch.matmul(q, k.transpose(1, 2)).flatten(1)  # [N, L*L]
        kinds = torch.matmul(k, self.kind.weight.t()).flatten(1)  # [N, L*K]
        logits = (
            pairs[:, src * self.obs_len + dst] + kinds[:, dst * self.kind.num_embeddings + kind]
        )
        return logits * self.dim**-0.5 + self.bias


class Policy(nn.Module):
    """Maps int64 tokens [N, L] to action logits [N, A] with a transformer.

    ``head_dim = 0`` reads the actions off the CLS token alone. ``head_dim = k > 0`` also
    projects every token to k features and lets the action layer see all of them, so an
    action's logit can depend directly on particular squares. A CLS-only head tends to learn
    a state-independent move preference first (the features of all boards collapse onto one
    direction) and escapes that plateau slowly; the token head does not have it.

    ``head = "pairs"`` scores each action from the two tokens it connects (:class:`PairHead`,
    ``pair_dim`` features, ``pair_kinds`` kinds); the game declares which tokens those are
    (:meth:`chessrl.game.Game.action_structure`), passed here as ``structure``.
    """

    def __init__(
        self,
        obs_vocab: int,
        obs_len: int,
        n_actions: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 8,
        d_ff: int = 1024,
        head_dim: int = 0,
        head: str = "linear",
        pair_dim: int = 64,
        pair_kinds: int = 1,
        structure: torch.Tensor | None = None,
    ):
        super().__init__()
        self.sizes: dict[str, int | str] = dict(
            obs_vocab=obs_vocab,
            obs_len=obs_len,
            n_actions=n_actions,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            d_ff=d_ff,
            head_dim=head_dim,
        )
        if head == "pairs":  # older checkpoints' sizes lack the keys: they are linear
            self.sizes.update(head=head, pair_dim=pair_dim, pair_kinds=pair_kinds)
        elif head != "linear":
            raise ValueError(f"unknown policy head {head!r}: use 'linear' or 'pairs'")
        self.embed = nn.Embedding(obs_vocab, d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.zeros(1, obs_len + 1, d_model))
        # token and position embeddings on the same scale: attention is blind to order except
        # through the positions, and a board is nothing but which piece stands on which square
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.pair_head = None
        if head == "pairs":
            self.pair_head = PairHead(d_model, obs_len, n_actions, pair_dim, pair_kinds, structure)
            return
        self.token_proj = nn.Linear(d_model, head_dim) if head_dim else None
        self.head = nn.Linear(d_model + obs_len * head_dim, n_actions)
        nn.init.normal_(self.head.weight, std=0.02)  # near-uniform at init, but state-dependent
        nn.init.zeros_(self.head.bias)
        self.bf16 = True  # autocast to bf16 on CUDA (log-probs stay float32)
        self.cpu_bf16 = False  # the same on a CPU (build_policy sets it where the CPU has bf16)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        if self.pair_head is not None:
            return self.pair_head(x[:, 1:])
        if self.token_proj is None:
            return self.head(x[:, 0])
        return self.head(torch.cat([x[:, 0], self.token_proj(x[:, 1:]).flatten(1)], dim=-1))

    def freeze(self, k: int) -> None:
        """Freeze the embeddings and the first ``k`` layers (k = 0 freezes nothing)."""
        if k <= 0:
            return
        for p in [self.embed.weight, self.cls, self.pos]:
            p.requires_grad_(False)
        for layer in self.layers[:k]:
            for p in layer.parameters():
                p.requires_grad_(False)


ROW_BLOCK = 16


def log_probs(
    policy: nn.Module,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    logits_out: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Log-probabilities [N, A] of the tempered policy over legal actions (-inf elsewhere).

    The single source of log-probs for sampling, the old policy, the reference policy and
    the loss. Rows with no legal action are given action 0 so that they stay finite.
    ``logits_out``, when given, receives ``"logits"``: the network's own logits [N, A]
    (float32, before the temperature and the legal mask; with grad) from the same forward.
    """
    module = getattr(policy, "module", policy)  # unwrap DDP for the attribute
    # Group members share positions (all of them at the root): each distinct position goes
    # through the network once and its logits are gathered back, which is exact (the gather's
    # backward sums the rows' gradients) and up to G times cheaper for one-move groups.
    # Matrix kernels may round a row differently in a batch of 1 or 10 rows than in one of
    # 16: padding to a multiple of ROW_BLOCK rows makes a position's log-probs the same in
    # the rollout, the old-policy recompute and the loss, so the first ratio is exactly 1.
    unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    pad = -unique.shape[0] % ROW_BLOCK
    if pad:
        unique = torch.cat([unique, unique[:1].expand(pad, -1)])
    kind = tokens.device.type
    if kind == "cuda":
        bf16 = getattr(module, "bf16", False)
    else:
        bf16 = kind == "cpu" and getattr(module, "cpu_bf16", False)
    with torch.autocast("cuda" if kind == "cuda" else "cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = policy(unique)
    if logits_out is not None:
        logits_out["logits"] = logits.float()[inverse]
    logits = logits.float() / temperature
    mask = mask.clone()
    mask[~mask.any(-1), 0] = True
    # the first row of each distinct position (padding rows keep 0: they are never gathered)
    first = torch.zeros(unique.shape[0], dtype=torch.long, device=tokens.device).scatter_reduce(
        0,
        inverse,
        torch.arange(len(inverse), device=tokens.device),
        reduce="amin",
        include_self=False,
    )
    if torch.equal(
        mask[first][inverse], mask
    ):  # one mask per position (the usual case): softmax once
        return torch.log_softmax(logits.masked_fill(~mask[first], float("-inf")), dim=-1)[inverse]
    return torch.log_softmax(logits[inverse].masked_fill(~mask, float("-inf")), dim=-1)


def sample(logp: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Sample one action per row from log-probs by Gumbel-max, using ``generator`` only.

    Never touches the global RNG, so evaluation and rollouts cannot reseed anything else.
    A row whose log-probs are NaN or infinite (a diverged policy) raises :class:`NonFinite`
    instead of being sampled: argmax over NaN would pick action 0, legal or not.
    """
    best = logp.amax(-1)
    if not bool(torch.isfinite(best).all()):
        bad = int((~torch.isfinite(best)).sum())
        raise NonFinite(
            f"non-finite logits in {bad} of {best.numel()} positions: "
            "the policy's outputs are NaN or infinite"
        )
    gen_device = generator.device if generator is not None else logp.device
    u = (
        torch.rand(logp.shape, generator=generator, device=gen_device)
        .to(logp.device)
        .clamp_(1e-20, 1.0)
    )
    return torch.argmax(logp - torch.log(-torch.log(u)), dim=-1)


def build_policy(cfg, game) -> Policy:
    """The policy a config asks for, sized for ``game``, optionally loaded and frozen."""
    extra = {}
    if cfg.head == "pairs":
        structure = game.action_structure()
        if structure is None:
            raise UserError(
                f"policy.head = 'pairs' needs a game that declares action_structure(); game "
                f"'{game.name}' does not: use policy.head = 'linear'"
            )
        structure = torch.as_tensor(np.asarray(structure), dtype=torch.long)
        extra = dict(
            head="pairs",
            pair_dim=cfg.pair_dim,
            pair_kinds=int(structure[:, 2].max()) + 1,
            structure=structure,
        )
    p = Policy(
        game.obs_vocab,
        game.obs_len,
        game.n_actions,
        cfg.d_model,
        cfg.n_layers,
        cfg.n_heads,
        cfg.d_ff,
        cfg.head_dim,
        **extra,
    )
    if cfg.init_checkpoint:
        from chessrl.checkpoint import load_policy_weights

        load_policy_weights(p, cfg.init_checkpoint)
    p.freeze(cfg.frozen_layers)
    set_precision(p, cfg.bf16, cfg.cpu_bf16)  # the run says so when cpu_bf16 is not had
    return p


def set_precision(policy: Policy, bf16: bool, cpu_bf16: bool) -> None:
    """What :func:`log_probs` autocasts to bf16: CUDA when ``bf16``; a CPU when ``cpu_bf16``
    and this CPU multiplies bf16 natively (:func:`cpu_has_bf16`), float32 otherwise."""
    policy.bf16 = bf16
    policy.cpu_bf16 = cpu_bf16 and cpu_has_bf16()


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices natively (x86 AMX-BF16 or AVX512-BF16, read
    from ``cpuinfo``'s flags; False where that cannot be read). Elsewhere torch emulates bf16,
    which is slower than float32."""
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
