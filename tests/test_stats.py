"""chessrl.stats against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chessrl.stats import (
    elo_ci,
    elo_diff,
    paired_difference,
    peak_is_noise,
    score_difference,
    t_cdf,
    t_quantile,
    trend,
    wilson,
)


@pytest.mark.parametrize(
    "successes, n, lo, hi",
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (6.4, 64, 0.0478, 0.1975),  # the analysed run's "peak": score 0.1 over 64 games
        (0, 0, 0.0, 1.0),
    ],
)
def test_wilson_known_values(successes, n, lo, hi):
    got = wilson(successes, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_elo():
    assert elo_diff(0.5) == 0.0
    assert elo_diff(0.75) == pytest.approx(190.85, abs=0.01)
    assert elo_diff(0.0) == -math.inf and elo_diff(1.0) == math.inf
    elo, lo, hi = elo_ci(0.5, 100)
    assert lo < elo == 0.0 < hi and lo == pytest.approx(-hi)
    assert elo_ci(0.0, 10)[:2] == (-math.inf, -math.inf) and math.isfinite(elo_ci(0.0, 10)[2])
    assert elo_ci(1.0, 10)[2] == math.inf


@pytest.mark.parametrize(
    "p, df, value",
    [
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.975, 5, 2.571),
        (0.975, 10, 2.228),
        (0.975, 30, 2.042),
        (0.975, 120, 1.980),
        (0.95, 10, 1.812),
        (0.995, 3, 5.841),
        (0.9, 4, 1.533),
        (0.975, math.inf, 1.960),
    ],
)
def test_t_quantile_table(p, df, value):
    assert t_quantile(p, df) == pytest.approx(value, abs=1e-3)
    assert t_quantile(1 - p, df) == pytest.approx(-value, abs=1e-3)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_trend_verdicts():
    g = np.random.default_rng(0)
    steps = np.arange(1, 401)
    assert trend(steps, 0.002 * steps + g.normal(0, 0.3, 400), 20).verdict == "improving"
    assert trend(steps, -0.002 * steps + g.normal(0, 0.3, 400), 20).verdict == "declining"
    flat = [trend(steps, g.normal(0, 0.3, 400), 20).verdict for _ in range(40)]
    assert flat.count("flat") >= 36  # a 95% interval: ~2 of 40 may miss
    raw = trend(steps, 0.01 * steps + g.normal(0, 0.3, 400))
    assert raw.n == 400 and raw.lo < 0.01 < raw.hi


def test_trend_with_too_little_data():
    t = trend([1, 2], [1.0, 2.0])
    assert t.verdict == "flat" and math.isnan(t.slope) and t.lo == -math.inf
    assert trend([1, 2, 3, 4], [1.0, float("nan"), 2.0, 3.0], 2).n == 1


def test_peak_is_noise():
    # the analysed run: ~3% for 20 evals of 64 games, one lucky 0.1
    noise, d = peak_is_noise([0.03] * 20 + [0.1], 64)
    assert noise and d["peak_index"] == 20 and d["level"] == pytest.approx(0.03)
    assert (
        d["p_value"] < 0.05 < d["p_adjusted"]
    )  # "significant" only if one forgets it is the best of 21
    real, d = peak_is_noise([0.03] * 10 + [0.3], 64)
    assert not real and d["p_adjusted"] < 1e-6
    assert peak_is_noise([0.4, 0.4, 0.4], [64, 64, 64])[0]
    assert peak_is_noise([0.2], 64) == (
        False,
        {"evaluations": 1, "reason": "fewer than 2 evaluations"},
    )
    with pytest.raises(ValueError):
        peak_is_noise([0.1, 0.2], [64])


@pytest.mark.parametrize(
    "a, na, b, nb, lo, hi",
    [
        (48 / 80, 80, 56 / 70, 70, 0.0524, 0.3339),  # Newcombe (1998), Table II, example (a)
        (0 / 10, 10, 0 / 20, 20, -0.2775, 0.1611),  # example (d), both scores 0: still an interval
    ],
)
def test_score_difference_known_values(a, na, b, nb, lo, hi):
    d, got_lo, got_hi = score_difference(a, na, b, nb)
    assert d == pytest.approx(b - a)
    assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=1e-4)


def test_score_difference_is_symmetric_and_narrows_with_games():
    d, lo, hi = score_difference(0.5, 100, 0.5, 100)
    assert d == 0.0 and lo == pytest.approx(-hi) and lo < 0 < hi
    _, lo2, hi2 = score_difference(0.5, 1000, 0.5, 1000)
    assert hi2 - lo2 < hi - lo
    d, lo, hi = score_difference(0.0, 30, 1.0, 30)  # all lost, then all won: inside [-1, 1]
    assert d == 1.0 and 0.8 < lo < 1.0 and hi == 1.0
    d, lo, hi = score_difference(1.0, 5, 0.0, 5)
    assert d == -1.0 and lo == -1.0 and -1.0 < hi < -0.3


def test_paired_difference_without_correlation_is_the_independent_interval():
    # phi = 0 exactly: both*neither == first_only*second_only (10*10 == 10*10)
    d, lo, hi = paired_difference(10, 10, 10, 10)
    n = 40
    assert (d, lo, hi) == pytest.approx(score_difference(20 / n, n, 20 / n, n))


def test_paired_difference_narrows_when_the_pairs_agree_and_counts_the_discordant_ones():
    # the same 2,000 positions twice: 392 right both times, 126 only first, 136 only second
    d, lo, hi = paired_difference(392, 126, 136, 1346)
    assert d == pytest.approx((136 - 126) / 2000)
    assert lo < d < hi
    _, ulo, uhi = score_difference(518 / 2000, 2000, 528 / 2000, 2000)
    assert ulo < lo and hi < uhi  # the paired interval is inside the unpaired one
    # a clear gain on the same positions is significant paired although small
    d2, lo2, _ = paired_difference(400, 20, 80, 1500)
    assert d2 == pytest.approx(0.03) and lo2 > 0
    # swapping the two players mirrors the interval
    d3, lo3, hi3 = paired_difference(400, 80, 20, 1500)
    assert (d3, lo3, hi3) == pytest.approx((-d2, -paired_difference(400, 20, 80, 1500)[2], -lo2))


def test_paired_difference_edges():
    assert paired_difference(0, 0, 0, 0) == (0.0, -1.0, 1.0)
    d, lo, hi = paired_difference(0, 0, 30, 0)  # everything gained
    assert d == 1.0 and 0.0 < lo < 1.0 and hi == 1.0
    d, lo, hi = paired_difference(50, 0, 0, 50)  # identical answers: no change
    assert d == 0.0 and lo < 0.0 < hi and hi - lo < 0.1
    with pytest.raises(ValueError):
        paired_difference(1, -1, 0, 0)
