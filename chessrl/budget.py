"""The loss budget: each term's value and its own gradient, measured on the same batch.

A term's share of the loss *value* is not its share of the *gradient*: a term near its
optimum (entropy near uniform) can have a large value and a small gradient, and a constant
has none. So every ``budget_every`` steps we differentiate each term separately and report
its gradient norm, its share of the summed norms and its cosine with the objective's
gradient. The per-term gradients sum to the total gradient, which is what the optimiser
then uses, so measuring costs one backward per term instead of one in total.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from chessrl import keys as K


def value_budget(
    values: dict[str, float], coefs: dict[str, float], raws: dict[str, float]
) -> dict[str, float]:
    """``budget/<term>/value|raw|coef|value_share`` for each term."""
    total = sum(abs(v) for v in values.values()) or 1.0
    out = {}
    for name, v in values.items():
        out[K.budget_key(name, "value")] = v
        out[K.budget_key(name, "raw")] = raws[name]
        out[K.budget_key(name, "coef")] = coefs[name]
        out[K.budget_key(name, "value_share")] = abs(v) / total
    return out


def backward_with_budget(
    terms: dict[str, torch.Tensor], params: list[torch.nn.Parameter], accumulate: bool = True
) -> dict[str, float]:
    """Measure each term's gradient; with ``accumulate``, also add their sum to ``params``' grads.

    Returns ``budget/<term>/grad_norm``, ``grad_share`` and ``cos_objective`` (the objective
    term must be named ``objective``).
    """
    names = list(terms)
    grads: dict[str, list[torch.Tensor]] = {}
    for i, name in enumerate(names):
        t = terms[name]
        if not t.requires_grad:
            grads[name] = [torch.zeros_like(p) for p in params]
            continue
        g = torch.autograd.grad(t, params, retain_graph=i < len(names) - 1, allow_unused=True)
        grads[name] = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]
    for j, p in enumerate(params if accumulate else []):
        total = cast(torch.Tensor, sum(grads[n][j] for n in names))  # terms: never empty
        p.grad = total if p.grad is None else p.grad + total
    flat = {n: torch.cat([g.reshape(-1) for g in gs]) for n, gs in grads.items()}
    norms = {n: float(f.norm()) for n, f in flat.items()}
    norm_sum = sum(norms.values()) or 1.0
    out = {}
    obj = flat.get(K.OBJECTIVE)
    for n in names:
        out[K.budget_key(n, "grad_norm")] = norms[n]
        out[K.budget_key(n, "grad_share")] = norms[n] / norm_sum
        if obj is not None:
            denom = norms[n] * norms[K.OBJECTIVE]
            out[K.budget_key(n, "cos_objective")] = (
                float(flat[n] @ obj) / denom if denom > 0 else math.nan
            )
    return out
