"""Small, dependency-free statistics for run diagnostics: score intervals, Elo, trends, peaks.

Everything here is deterministic (no random numbers, no global state) and works on plain
Python floats, so the trainer can call it every step and the report can call it offline.
Scores are chess-style: a win counts 1, a draw 1/2, so ``successes`` may be fractional.
See docs/diagnostics.md for the rules these functions implement.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Trend",
    "wilson",
    "score_difference",
    "paired_difference",
    "elo_diff",
    "elo_ci",
    "t_cdf",
    "t_quantile",
    "trend",
    "block_means",
    "peak_is_noise",
]


# --- score intervals and Elo -----------------------------------------------------------


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n`` (95% for z = 1.96).

    ``successes`` is a score (wins + draws/2) and may be fractional. With ``n = 0`` nothing
    is known and the interval is (0, 1).
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0.0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n]; got {successes} of {n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def score_difference(
    score_a: float, games_a: int, score_b: float, games_b: int, z: float = 1.96
) -> tuple[float, float, float]:
    """(difference, lo, hi): ``score_b - score_a`` of two independent matches and its interval.

    Newcombe's hybrid score interval (his method 10), built from the two Wilson intervals: it
    stays inside [-1, 1], and unlike the normal approximation it is not degenerate at a score
    of 0 or 1 (a policy that loses every game before training is the usual first evaluation).
    """
    la, ua = wilson(score_a * games_a, games_a, z)
    lb, ub = wilson(score_b * games_b, games_b, z)
    d = score_b - score_a
    lo = d - math.sqrt((score_b - lb) ** 2 + (ua - score_a) ** 2)
    hi = d + math.sqrt((ub - score_b) ** 2 + (score_a - la) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def paired_difference(
    both: int, first_only: int, second_only: int, neither: int, z: float = 1.96
) -> tuple[float, float, float]:
    """(difference, lo, hi): ``p_second - p_first`` of two success rates measured on the same
    items (a checkpoint and its start on the same benchmark positions) and its interval.

    The counts are the paired table: items both got right, only the first, only the second,
    neither. Newcombe's paired square-and-add interval (his 1998 method 10): the two Wilson
    intervals combined with the correlation ``phi`` of the pairs (continuity-corrected, 0 when a
    margin is empty). Items both got right or both missed narrow it: the same change measured
    on the same positions is known far better than by two independent samples, whose interval
    (:func:`score_difference`) it equals when ``phi`` is 0.
    """
    counts = (both, first_only, second_only, neither)
    if min(counts) < 0:
        raise ValueError(f"paired counts must be >= 0; got {counts}")
    n = sum(counts)
    if n == 0:
        return 0.0, -1.0, 1.0
    first, second = both + first_only, both + second_only  # each player's successes
    p1, p2 = first / n, second / n
    l1, u1 = wilson(first, n, z)
    l2, u2 = wilson(second, n, z)
    margins = first * (n - first) * second * (n - second)
    cross = both * neither - first_only * second_only
    corrected = cross - n / 2 if cross > n / 2 else (float(cross) if cross < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    d = p2 - p1
    lo = d - math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    hi = d + math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return d, max(-1.0, lo), min(1.0, hi)


def elo_diff(score: float) -> float:
    """Elo difference implied by an expected score: ``-400 log10(1/score - 1)``.

    0.5 gives 0; a score of 0 gives -inf and a score of 1 gives +inf.
    """
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must lie in [0, 1]; got {score}")
    if score == 0.0:
        return -math.inf
    if score == 1.0:
        return math.inf
    return -400.0 * math.log10(1.0 / score - 1.0)


def elo_ci(score: float, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """(elo, lo, hi): the Elo difference of ``score`` over ``n`` games and its interval.

    The interval maps the Wilson interval of the score through :func:`elo_diff` (which is
    monotone), so a 0/n score gives (-inf, -inf, finite hi) and ``n = 0`` gives (elo, -inf, inf).
    """
    lo, hi = wilson(score * n, n, z) if n > 0 else (0.0, 1.0)
    return elo_diff(score), elo_diff(lo), elo_diff(hi)


# --- Student's t distribution ------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (``math.inf``: the normal)."""
    if df <= 0:
        raise ValueError(f"df must be positive; got {df}")
    if math.isinf(df):
        return 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom.

    Inverts :func:`t_cdf` (exact incomplete-beta evaluation) by bisection, so the result is
    accurate to ~1e-10, e.g. ``t_quantile(0.975, 10) = 2.2281``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1); got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


# --- trends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """An OLS slope (per step) with its confidence interval and a verdict.

    ``verdict`` is "improving" when the whole interval lies above 0, "declining" when it
    lies below, else "flat". ``n`` is the number of points fitted (window means or raw
    values); with fewer than 3 the slope is NaN, the interval (-inf, inf) and the verdict flat.
    """

    slope: float
    lo: float
    hi: float
    verdict: str
    intercept: float = math.nan
    n: int = 0


def block_means(
    steps: Sequence[float], values: Sequence[float], window: int
) -> tuple[list[float], list[float]]:
    """Means of consecutive, non-overlapping blocks of ``window`` finite points.

    Returns (mean step, mean value) per full block; a trailing partial block is dropped so
    every point has the same variance.
    """
    pts = [(float(s), float(v)) for s, v in zip(steps, values) if _finite(s) and _finite(v)]
    xs: list[float] = []
    ys: list[float] = []
    for i in range(0, len(pts) - window + 1, window):
        block = pts[i : i + window]
        xs.append(sum(p[0] for p in block) / window)
        ys.append(sum(p[1] for p in block) / window)
    return xs, ys


def trend(
    steps: Sequence[float],
    values: Sequence[float],
    window: int | None = None,
    confidence: float = 0.95,
) -> Trend:
    """Slope of ``values`` against ``steps`` with a ``confidence`` interval from a t quantile.

    With ``window`` (> 1) the fit is to non-overlapping window means (:func:`block_means`):
    unlike rolling means, their residuals are independent, so the t interval stays honest,
    and averaging removes most per-step noise. Without it the raw finite points are fitted.
    """
    if window is not None and window > 1:
        xs, ys = block_means(steps, values, window)
    else:
        pairs = [(float(s), float(v)) for s, v in zip(steps, values) if _finite(s) and _finite(v)]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    n = len(xs)
    if n < 3:
        return Trend(math.nan, -math.inf, math.inf, "flat", math.nan, n)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0.0:
        return Trend(math.nan, -math.inf, math.inf, "flat", math.nan, n)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    sse = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    se = math.sqrt(sse / (n - 2) / sxx)
    half = t_quantile(0.5 + confidence / 2.0, n - 2) * se
    lo, hi = slope - half, slope + half
    verdict = "improving" if lo > 0 else "declining" if hi < 0 else "flat"
    return Trend(slope, lo, hi, verdict, intercept, n)


# --- is an evaluation peak real? ----------------------------------------------------------


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _fisher_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided Fisher exact p-value that sample 1's proportion exceeds sample 2's."""
    total, k = n1 + n2, x1 + x2
    log_denom = _log_comb(total, n1)
    p = 0.0
    for x in range(x1, min(n1, k) + 1):
        if k - x > n2:
            continue
        p += math.exp(_log_comb(k, x) + _log_comb(total - k, n1 - x) - log_denom)
    return min(1.0, p)


def peak_is_noise(
    scores: Sequence[float], games: Sequence[int] | int, alpha: float = 0.05
) -> tuple[bool, dict[str, Any]]:
    """Is the best of several evaluation scores within the noise of the others' level?

    The rule (docs/diagnostics.md): the peak is the highest score; the level is the pooled
    score of every *other* evaluation. A one-sided Fisher exact test asks whether the peak's
    games scored more than the rest (wins + draws/2, the peak's score rounded down); because
    the peak was picked as the best of ``k`` evaluations, its p-value is Šidák-corrected:
    ``p_adj = 1 - (1 - p)^k``. The peak is noise when ``p_adj > alpha``, or when it does not
    exceed the level at all. Needs at least 2 evaluations; with fewer it is not called noise.

    Returns ``(is_noise, details)``; details hold the numbers behind the verdict (the
    peak's index, score, games and 95% Wilson interval, the level with its games and 95%
    Wilson interval, p, p_adj).
    """
    k = len(scores)
    counts = [int(games)] * k if isinstance(games, (int, float)) else [int(g) for g in games]
    if len(counts) != k:
        raise ValueError(f"{k} scores but {len(counts)} game counts")
    if k < 2:
        return False, {"evaluations": k, "reason": "fewer than 2 evaluations"}
    i = max(range(k), key=lambda j: (scores[j], -j))
    n1 = counts[i]
    peak = float(scores[i])
    rest_games = sum(counts) - n1
    rest_points = sum(float(s) * g for j, (s, g) in enumerate(zip(scores, counts)) if j != i)
    level = rest_points / rest_games if rest_games > 0 else math.nan
    lo, hi = wilson(peak * n1, n1)
    level_lo, level_hi = wilson(rest_points, rest_games) if rest_games > 0 else (0.0, 1.0)
    details: dict[str, Any] = {
        "evaluations": k,
        "peak_index": i,
        "peak_score": peak,
        "peak_games": n1,
        "peak_lo": lo,
        "peak_hi": hi,
        "level": level,
        "level_lo": level_lo,
        "level_hi": level_hi,
        "level_games": rest_games,
        "alpha": alpha,
    }
    if rest_games <= 0 or n1 <= 0 or not peak > level + 1e-12:
        details.update(p_value=1.0, p_adjusted=1.0)
        return True, details
    x1 = int(math.floor(peak * n1 + 1e-9))
    x2 = int(round(rest_points))
    p = _fisher_greater(x1, n1, x2, rest_games)
    p_adj = 1.0 - (1.0 - p) ** k
    details.update(p_value=p, p_adjusted=p_adj)
    return p_adj > alpha, details


def _finite(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
