"""STAFF's variants beyond the paper (issue 15): robust region edges, V_i on ranks, a
length-aware effort. Pure numpy, on hand-made scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from staff.selection.base import SelectionInput
from staff.selection.regions import make_regions
from staff.selection.staff import StaffSelector
from staff.selection.verification import verification_factors


def heavy_tailed(n=29_000, seed=0):
    return np.random.default_rng(seed).lognormal(mean=0.0, sigma=2.0, size=n)


def test_heavy_tail_collapses_equal_width_regions_and_the_robust_edges_spread_them():
    scores, k = heavy_tailed(), 20
    paper = make_regions(scores, k)
    assert paper.sizes.max() / len(scores) > 0.95          # nearly all in one region
    assert (paper.sizes >= 0.01 * len(scores)).sum() == 1   # the rest: a few outliers each
    # Clipping 1% at each end puts a sample in every region, but with a tail this heavy
    # (sigma = 2) most still share the first one; log and equal-count spread them.
    clipped = make_regions(scores, k, edges="quantile-clipped")
    assert (clipped.sizes > 0).sum() == k
    assert clipped.sizes.max() / len(scores) < 0.85
    assert (clipped.sizes >= 0.01 * len(scores)).sum() >= 5
    for rule in ("log", "equal-count"):
        regions = make_regions(scores, k, edges=rule)
        assert (regions.sizes >= 0.01 * len(scores)).sum() >= k / 2, rule
        assert regions.sizes.max() / len(scores) < 0.35, rule
        assert regions.sizes.sum() == len(scores)
    counts = make_regions(scores, k, edges="equal-count").sizes
    assert counts.min() >= len(scores) // k - 1 and counts.max() <= len(scores) // k + 1
    clipped = make_regions(scores, k, edges="quantile-clipped", clip=0.01)
    lo, hi = np.quantile(scores, [0.01, 0.99])
    assert clipped.edges[0] == pytest.approx(lo) and clipped.edges[-1] == pytest.approx(hi)
    assert set(clipped.of[scores > hi]) == {k - 1} and set(clipped.of[scores < lo]) == {0}
    logs = make_regions(scores, k, edges="log")
    assert logs.edges[0] == pytest.approx(scores.min()) and logs.edges[-1] == pytest.approx(
        scores.max())


def test_default_edges_are_algorithm_1():
    scores = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
    regions = make_regions(scores, 4)
    assert regions.of.tolist() == [0, 0, 1, 2, 3, 3]   # an edge goes to the upper region
    assert regions.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="region_edges == 'bogus'"):
        make_regions(scores, 4, edges="bogus")


def test_rank_scale_ignores_any_monotone_change_of_the_targets_scores():
    rng = np.random.default_rng(2)
    spec = rng.random(40)
    plan = {0: np.arange(0, 10), 1: np.arange(10, 20), 2: np.arange(20, 40)}
    target = {i: float(v) for i, v in enumerate(rng.random(40) + 0.1)}
    squared = {i: v ** 3 for i, v in target.items()}
    by_rank = verification_factors(spec, plan, target, "mean", 3, scale="rank")
    assert verification_factors(spec, plan, squared, "mean", 3, scale="rank") == pytest.approx(
        by_rank)
    assert verification_factors(spec, plan, squared, "mean", 3) != pytest.approx(
        verification_factors(spec, plan, target, "mean", 3))
    # Ranks: a region whose samples stand higher for the target than for the small model.
    ordered = {i: float(i) for i in range(40)}
    reverse = np.arange(40)[::-1].astype(float)
    factors = verification_factors(reverse, plan, ordered, "mean", 3, scale="rank")
    assert factors[0] < 1 < factors[2]


def test_length_adjust_removes_the_length_trend_of_effort():
    rng = np.random.default_rng(3)
    n = rng.integers(5, 200, size=3000).astype(float)
    effort = n ** -0.8 * rng.lognormal(0, 0.3, size=3000)   # mean-loss gradients shrink with n
    data = SelectionInput(ids=np.arange(3000).astype(str),
                          scores={"effort": effort, "n_response_tokens": n})
    assert spearmanr(effort, n)[0] < -0.8
    residual = StaffSelector(None, length_adjust="residual")
    adjusted = effort * residual.length_weights(data)
    assert abs(spearmanr(adjusted, n)[0]) < 0.05
    assert residual.length_slope_ == pytest.approx(-0.8, abs=0.05)
    summed = StaffSelector(None, length_adjust="sum").length_weights(data)
    assert np.allclose(summed, n)
    assert np.all(StaffSelector(None).length_weights(data) == 1)


def test_variant_selectors_return_m_distinct_samples_and_scale_the_targets_scores_alike():
    rng = np.random.default_rng(4)
    n = rng.integers(5, 60, size=500).astype(float)
    effort = heavy_tailed(500, seed=5)
    data = SelectionInput(ids=np.arange(500).astype(str),
                          scores={"effort": effort, "n_response_tokens": n})
    seen = {}

    def verify(indices):
        seen.setdefault("calls", []).append(len(indices))
        return effort[indices] * 2.0        # the target agrees with the small model

    for options in ({"region_edges": "quantile-clipped"}, {"region_edges": "log"},
                    {"region_edges": "equal-count", "verify_scale": "rank"},
                    {"length_adjust": "sum"}, {"length_adjust": "residual"}):
        selector = StaffSelector(verify, regions=10, verify_per_region=4, **options)
        chosen = selector.select(data, 100, seed=0)
        assert len(set(chosen.tolist())) == 100
        # The target's scores get the same length weights as the small model's: a target that
        # agrees up to a constant still gives every verified region V_i = 1.
        verified = [r for r, idx in selector.plan_.items() if len(idx)]
        assert selector.factors_[verified] == pytest.approx(1.0), options
    with pytest.raises(ValueError, match="length_adjust == 'mean'"):
        StaffSelector(verify, length_adjust="mean")


def heteroscedastic(size=3000, seed=6):
    """Effort as measured on Multi30k: it falls with response length, and it spreads wider for
    short responses (a mean over fewer token gradients)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(8, 80, size=size).astype(float)
    effort = n ** -0.3 * rng.lognormal(0, 2.0 / np.sqrt(n), size=size)
    return SelectionInput(ids=np.arange(size).astype(str),
                          scores={"effort": effort, "n_response_tokens": n}), n


def short_share(n, chosen):
    return float(np.mean(n[chosen] <= np.quantile(n, 1 / 3)))


def test_the_residual_keeps_short_responses_over_drawn_and_length_strata_do_not():
    data, n = heteroscedastic()
    verify = lambda idx: data.score("effort")[idx]   # noqa: E731 - the target agrees
    m, data_share = 300, short_share(n, np.arange(len(n)))
    paper = StaffSelector(verify, regions=50, verify_per_region=5).select(data, m, seed=0)
    residual = StaffSelector(verify, regions=50, verify_per_region=5,
                             length_adjust="residual").select(data, m, seed=0)
    # The length trend removed, the residual's tails are still mostly short responses, and
    # Eq. 4 over-draws the thin tails: the coreset stays short, as on Multi30k.
    assert short_share(n, paper) > data_share + 0.1
    assert short_share(n, residual) > data_share + 0.1
    strata = StaffSelector(verify, regions=50, verify_per_region=5, length_strata=5)
    chosen = strata.select(data, m, seed=0)
    assert len(set(chosen.tolist())) == m
    # Five equal-count strata by length, each spending m / 5: the data's length distribution.
    order = np.argsort(n, kind="stable")
    per_stratum = [np.isin(chosen, part).sum() for part in np.array_split(order, 5)]
    assert per_stratum == [60] * 5
    # Within a stratum STAFF still chooses: the extreme effort deciles are over-drawn (a
    # random draw puts 20% of the coreset there).
    effort = data.score("effort")
    lo, hi = np.quantile(effort, [0.1, 0.9])
    assert np.mean((effort[chosen] <= lo) | (effort[chosen] >= hi)) > 0.3
    table = {row.region: row for row in strata.table_}
    assert sum(row.selected for row in table.values()) == m
    assert all(row.size == len(strata.regions_.members[r]) for r, row in table.items())
    again = StaffSelector(verify, regions=50, verify_per_region=5, length_strata=5)
    assert np.array_equal(np.sort(again.select(data, m, seed=0)), np.sort(chosen))


def test_length_strata_split_m_by_stratum_size_and_leave_the_paper_rule_at_zero():
    data, n = heteroscedastic(size=103, seed=7)
    verify = lambda idx: data.score("effort")[idx]   # noqa: E731
    chosen = StaffSelector(verify, regions=5, verify_per_region=3,
                           length_strata=4).select(data, 10, seed=1)
    order = np.argsort(n, kind="stable")
    # 103 samples in strata of 26, 26, 26, 25: budgets 10 x size / 103 with the largest
    # remainders rounded up -> 3, 3, 2, 2 (2.524, 2.524, 2.524, 2.427 -> two of the three
    # 2.524s get the two leftover samples, the first ones by stratum order).
    counts = [np.isin(chosen, part).sum() for part in np.array_split(order, 4)]
    assert counts == [3, 3, 2, 2]
    plain = StaffSelector(verify, regions=5, verify_per_region=3).select(data, 10, seed=1)
    zero = StaffSelector(verify, regions=5, verify_per_region=3,
                         length_strata=0).select(data, 10, seed=1)
    assert np.array_equal(plain, zero)
    with pytest.raises(ValueError, match="length_strata == 1, must be 0"):
        StaffSelector(verify, length_strata=1)
