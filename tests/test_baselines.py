"""Random, EL2N, GraNd, CCS and D2 on hand-made scores and embeddings (no model)."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staff.selection.base import SELECTORS, SelectionInput
from staff.selection.baselines.coverage import (CCSSelector, D2Selector, ccs_budgets, d2_forward,
                                                knn_graph)
from staff.selection.baselines.importance import EL2NSelector, GraNdSelector, RandomSelector

N = 300


def data(n=N, seed=0, dim=6):
    rng = np.random.default_rng(seed)
    return SelectionInput(ids=np.array([f"id{i}" for i in range(n)]),
                          scores={"el2n": rng.gamma(2.0, 1.0, n), "effort": rng.random(n)},
                          embeddings=rng.normal(size=(n, dim)).astype(np.float32))


ALL = {"random": RandomSelector, "el2n": EL2NSelector, "grand": GraNdSelector,
       "ccs": lambda: CCSSelector(strata=10), "d2": D2Selector}


def test_registry_names():
    for name in ["random", "el2n", "grand", "ccs", "d2"]:
        assert SELECTORS[name].name == name
    assert SELECTORS["d2"] is D2Selector and SELECTORS["ccs"] is CCSSelector


@pytest.mark.parametrize("m", [0, 1, 7, N // 2, N - 1, N])
@pytest.mark.parametrize("name", sorted(ALL))
def test_exactly_m_distinct_indices(name, m):
    sel = ALL[name]().select(data(), m, seed=0)
    assert sel.dtype == np.int64 and len(sel) == m and len(np.unique(sel)) == m
    assert m == 0 or (sel.min() >= 0 and sel.max() < N)


@pytest.mark.parametrize("name", sorted(ALL))
def test_deterministic_under_seed(name):
    d = data()
    assert np.array_equal(ALL[name]().select(d, 90, seed=5), ALL[name]().select(d, 90, seed=5))


@pytest.mark.parametrize("name", ["random", "ccs"])
def test_random_methods_differ_across_seeds(name):
    d = data()
    a, b = ALL[name]().select(d, 90, seed=1), ALL[name]().select(d, 90, seed=2)
    assert not np.array_equal(np.sort(a), np.sort(b))


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("m", [-1, N + 1])
def test_m_out_of_range(name, m):
    with pytest.raises(ValueError, match=re.escape(f"m == {m}, must be in [0, {N}]")):
        ALL[name]().select(data(), m, seed=0)


def test_el2n_and_grand_take_the_top_of_their_own_score():
    d = data()
    for selector, key in [(EL2NSelector(), "el2n"), (GraNdSelector(), "effort")]:
        sel = selector.select(d, 40, seed=0)
        assert np.array_equal(sel, np.argsort(-d.scores[key])[:40])   # highest first
        assert d.scores[key][sel].min() >= np.sort(d.scores[key])[-40]


def test_top_m_ties_go_to_the_lower_index():
    d = SelectionInput(ids=np.arange(6), scores={"el2n": [1.0, 3.0, 2.0, 3.0, 2.0, 2.0]})
    assert EL2NSelector().select(d, 4, seed=0).tolist() == [1, 3, 2, 4]


def test_missing_and_non_finite_scores():
    d = SelectionInput(ids=np.arange(4), scores={"el2n": [1.0, np.nan, 2.0, 0.5]})
    with pytest.raises(ValueError, match="needs the per-sample score 'effort'"):
        GraNdSelector().select(d, 2, seed=0)
    with pytest.raises(ValueError, match=re.escape("score 'el2n' has 1 NaN/inf value(s)")):
        EL2NSelector().select(d, 2, seed=0)


@pytest.mark.parametrize("make, message", [
    (lambda: CCSSelector(strata=0), "strata == 0, must be an int >= 1."),
    (lambda: CCSSelector(hard_cutoff=1.0), "hard_cutoff == 1.0, must be in [0, 1)."),
    (lambda: CCSSelector(hard_cutoff=-0.1), "hard_cutoff == -0.1, must be in [0, 1)."),
    (lambda: D2Selector(k=0), "k == 0, must be an int >= 1."),
    (lambda: D2Selector(gamma=-1.0), "gamma == -1.0, must be finite and >= 0."),
    (lambda: D2Selector(distance_scale="max"), "distance_scale == 'max', must be 'mean' or"),
    (lambda: D2Selector(reverse_graph="in"), "reverse_graph == 'in', must be 'symmetric' or"),
    (lambda: EL2NSelector(score=""), "score == '', must be a non-empty score name."),
])
def test_constructor_checks(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


# ----------------------------------------------------------------------------- CCS

def skewed():
    """6 strata of equal width: stratum 0 holds 1000 samples, strata 1-5 hold 10 each."""
    counts = [1000, 10, 10, 10, 10, 10]
    scores = np.concatenate([r + np.linspace(0.05, 0.95, c) for r, c in enumerate(counts)])
    stratum = np.repeat(np.arange(6), counts)
    return SelectionInput(ids=np.arange(len(scores)), scores={"el2n": scores}), stratum


def test_ccs_takes_sparse_strata_whole_and_the_dense_one_the_rest():
    d, stratum = skewed()
    for m in [60, 200, 700]:
        sel = CCSSelector(strata=6).select(d, m, seed=0)
        assert np.bincount(stratum[sel], minlength=6).tolist() == [m - 50] + [10] * 5
    # A budget smaller than the strata: remaining // strata_left, smallest strata first
    # (1..5, then the dense 0): 26//6=4, 22//5=4, 18//4=4, 14//3=4, 10//2=5, 5//1=5.
    sel = CCSSelector(strata=6).select(d, 26, seed=0)
    assert np.bincount(stratum[sel], minlength=6).tolist() == [5, 4, 4, 4, 4, 5]


def test_ccs_draws_at_random_inside_a_stratum():
    d, stratum = skewed()
    a = CCSSelector(strata=6).select(d, 200, seed=0)
    b = CCSSelector(strata=6).select(d, 200, seed=1)
    assert not np.array_equal(np.sort(a[stratum[a] == 0]), np.sort(b[stratum[b] == 0]))
    # Not the top or bottom of the dense stratum: spread over its whole score range.
    dense = d.scores["el2n"][a[stratum[a] == 0]]
    assert dense.min() < 0.3 and dense.max() > 0.7


def test_ccs_hard_cutoff_removes_the_top():
    d, _ = skewed()
    s = d.scores["el2n"]
    sel = CCSSelector(strata=6, hard_cutoff=0.1).select(d, 900, seed=0)
    dropped = np.argsort(-s)[:105]               # floor(1050 * 0.1)
    assert not set(sel.tolist()) & set(dropped.tolist())
    with pytest.raises(ValueError, match=re.escape("m == 946, must be <= 945")):
        CCSSelector(strata=6, hard_cutoff=0.1).select(d, 946, seed=0)


def test_ccs_skips_empty_strata():
    # Two clumps at the ends of the range: 48 of 50 strata are empty and get no share.
    s = np.concatenate([np.zeros(100), np.ones(5)])
    d = SelectionInput(ids=np.arange(105), scores={"el2n": s})
    sel = CCSSelector(strata=50).select(d, 20, seed=0)
    assert np.sum(s[sel] == 1.0) == 5 and np.sum(s[sel] == 0.0) == 15


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=12), st.data())
def test_ccs_budgets_place_exactly_m_without_a_fill(sizes, draw):
    sizes = np.array(sizes)
    m = draw.draw(st.integers(0, int(sizes.sum())))
    budgets = ccs_budgets(sizes, m)
    assert budgets.sum() == m and np.all(budgets <= sizes) and np.all(budgets >= 0)
    # The smallest non-empty stratum gets min(count, m // strata) (Zheng et al., Alg. 1).
    nonempty = np.flatnonzero(sizes)
    if len(nonempty):
        r = nonempty[np.argmin(sizes[nonempty])]
        assert budgets[r] == min(sizes[r], m // len(nonempty))


# ----------------------------------------------------------------------------- D2

def clusters(seed=0, dim=8):
    """A dense cluster of 900 points with higher scores and 4 small tight clusters of 25."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (5, dim)) + np.arange(5)[:, None] * 10
    label = np.repeat(np.arange(5), [900, 25, 25, 25, 25])
    spread = np.where(label == 0, 1.0, 0.5)[:, None]
    x = (centers[label] + spread * rng.normal(size=(len(label), dim))).astype(np.float32)
    s = np.where(label == 0, 0.9, 0.7) + rng.uniform(0, 0.1, len(label))
    return SelectionInput(ids=np.arange(len(label)), scores={"el2n": s}, embeddings=x), label


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d2_spreads_picks_over_the_clusters(seed):
    d, label = clusters(seed)
    top = np.bincount(label[EL2NSelector().select(d, 200, seed=0)], minlength=5)
    d2 = np.bincount(label[D2Selector().select(d, 200, seed=0)], minlength=5)
    assert top[1:].sum() == 0                    # score alone: only the dense cluster
    assert np.all(d2[1:] >= 1), d2               # D2: every small cluster is covered


def dense_knn(x, k):
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx, d


def reference_d2(x, s, k, gamma, symmetric, m):
    """The straightforward dense O(N²) version, as written in the D2 paper."""
    dist, idx, _ = dense_knn(x.astype(np.float64), k)
    dist = dist / dist.mean()
    n = len(x)
    rho = np.array([s[i] + sum(np.exp(-dist[i, t]) * s[idx[i, t]] for t in range(k))
                    for i in range(n)])
    w = np.zeros((n, n))
    for i in range(n):
        w[i, idx[i]] = np.exp(-gamma * dist[i])
        if symmetric:
            w[idx[i], i] = np.exp(-gamma * dist[i])
    r, chosen = rho.copy(), []
    for _ in range(m):
        masked = np.where(np.isin(np.arange(n), chosen), -np.inf, r)
        k_ = int(np.argmax(masked))
        nb = np.flatnonzero(w[k_])
        r[nb] -= w[k_, nb] * r[k_]
        chosen.append(k_)
    return np.array(chosen), rho


@pytest.mark.parametrize("graph", ["symmetric", "out"])
def test_d2_matches_a_dense_reference(graph):
    d = data(n=120, seed=3, dim=4)
    sel = D2Selector(k=4, gamma=0.5, reverse_graph=graph)
    got = sel.select(d, 60, seed=0)
    want, rho = reference_d2(d.embeddings, d.scores["el2n"], 4, 0.5, graph == "symmetric", 60)
    np.testing.assert_allclose(sel.rho_, rho, rtol=1e-5)
    assert np.array_equal(got, want)


def test_knn_graph_excludes_self_even_with_duplicates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    x[10] = x[11] = x[12]                         # three identical rows
    dist, idx = knn_graph(x, 4)
    assert not np.any(idx == np.arange(50)[:, None])
    assert len({tuple(r) for r in map(sorted, idx)}) > 1
    want, _, _ = dense_knn(x, 4)
    np.testing.assert_allclose(np.sort(dist, 1), np.sort(want, 1), atol=1e-9)
    assert set(idx[10][:2]) == {11, 12}


def test_d2_forward_formula():
    s = np.array([1.0, 2.0, 3.0])
    dist = np.array([[1.0], [2.0], [0.5]])
    idx = np.array([[1], [2], [0]])
    np.testing.assert_allclose(d2_forward(s, dist, idx),
                               [1 + np.exp(-1) * 2, 2 + np.exp(-2) * 3, 3 + np.exp(-0.5) * 1])


def test_d2_is_invariant_to_embedding_and_score_scale():
    d = data(n=400, seed=1)
    base = D2Selector().select(d, 150, seed=0)
    scaled = SelectionInput(ids=d.ids, scores={"el2n": 7.0 * d.scores["el2n"]},
                            embeddings=250.0 * d.embeddings)
    assert np.array_equal(base, D2Selector().select(scaled, 150, seed=0))
    # Raw distances (official code) are scale-dependent: at this scale exp(-d) ~ 0 and D2
    # collapses to top-m by score.
    raw = D2Selector(distance_scale="none").select(scaled, 150, seed=0)
    assert np.array_equal(np.sort(raw), np.sort(np.argsort(-d.scores["el2n"])[:150]))


def test_d2_needs_embeddings_and_clamps_k():
    d = SelectionInput(ids=np.arange(5), scores={"el2n": np.arange(5.0)})
    with pytest.raises(ValueError, match=re.escape("d2 needs data.embeddings")):
        D2Selector().select(d, 2, seed=0)
    d.embeddings = np.arange(10.0).reshape(5, 2)
    with pytest.warns(UserWarning, match="k == 5 but only 4 other samples"):
        assert len(D2Selector(k=5).select(d, 3, seed=0)) == 3


def test_d2_memory_is_linear_not_quadratic():
    # N = 20000: an N×N float32 matrix alone would be 1.6 GB; the kNN graph is ~2 MB.
    rng = np.random.default_rng(0)
    n = 20_000
    d = SelectionInput(ids=np.arange(n), scores={"el2n": rng.random(n)},
                       embeddings=rng.normal(size=(n, 16)).astype(np.float32))
    tracemalloc.start()
    try:
        sel = D2Selector().select(d, 2_000, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(sel) == 2_000
    assert peak < 100e6, f"peak traced memory {peak / 1e6:.0f} MB"


def test_baselines_never_import_torch_or_transformers():
    import subprocess
    import sys

    code = ("import sys, staff.selection.baselines.coverage as b, numpy as np; "
            "from staff.selection.base import SelectionInput; "
            "d = SelectionInput(ids=np.arange(30), scores={'el2n': np.arange(30.0)}, "
            "embeddings=np.eye(30)); b.D2Selector().select(d, 5, 0); "
            "print('torch' in sys.modules or 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
