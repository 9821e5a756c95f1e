"""The coverage-centric baselines: CCS spreads the coreset over equal-width score strata, D2
over a kNN graph of the sample embeddings, so that hard samples are kept without leaving parts
of the data uncovered. Pure numpy + scikit-learn.
"""

from __future__ import annotations

import heapq
import warnings

import numpy as np

from ..base import SelectionInput, check_m, check_selection, finite_score, register
from ..regions import hard_prune_mask, make_regions

__all__ = ["CCSSelector", "D2Selector", "knn_graph", "d2_forward", "d2_reverse"]


# ----------------------------------------------------------------------------- CCS

def ccs_budgets(sizes: np.ndarray, m: int) -> np.ndarray:
    """Zheng et al. (2023), Alg. 1: visit the non-empty strata by size (smallest first, ties
    by stratum index); each gets min(count, remaining // strata_left).

    Visiting smallest first makes this place exactly min(m, Σ sizes): when a stratum is not
    taken whole it gets q = R // L (R = remaining, L = strata left, R = qL + r, r < L), and
    the L − 1 later strata are at least as large, so they hold ≥ (L−1)(q+1) ≥ (L−1)q + r
    = R − q samples, which is what is left. So no fill pass is ever needed; the assert says so.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    order = [int(r) for r in np.lexsort((np.arange(len(sizes)), sizes)) if sizes[r] > 0]
    budgets = np.zeros(len(sizes), dtype=np.int64)
    remaining = m
    for step, r in enumerate(order):
        budgets[r] = min(int(sizes[r]), remaining // (len(order) - step))
        remaining -= budgets[r]
    assert budgets.sum() == min(m, int(sizes.sum())), (budgets.sum(), m, sizes.sum())
    return budgets


@register("ccs")
class CCSSelector:
    """Coverage-Centric Coreset Selection (Zheng et al., 2023) over ``score`` (EL2N, as in
    the STAFF paper).

    1. Optionally drop the top ``hard_cutoff`` fraction by score (β, the likely mislabelled
       or too-hard samples); floor(N·β) samples go.
    2. ``strata`` strata of equal width over [min, max] of the remaining scores (the same
       rule as STAFF's regions, ``regions.make_regions``).
    3. Budgets by ``ccs_budgets`` (smallest stratum first, an even share of what is left,
       capped at the stratum size); a uniform random draw inside each stratum.
    """

    def __init__(self, strata: int = 50, hard_cutoff: float = 0.0, score: str = "el2n"):
        if isinstance(strata, bool) or not isinstance(strata, (int, np.integer)) or strata < 1:
            raise ValueError(f"strata == {strata!r}, must be an int >= 1.")
        if not 0.0 <= hard_cutoff < 1.0:
            raise ValueError(f"hard_cutoff == {hard_cutoff}, must be in [0, 1).")
        if not isinstance(score, str) or not score:
            raise ValueError(f"score == {score!r}, must be a non-empty score name.")
        self.strata = int(strata)
        self.hard_cutoff = float(hard_cutoff)
        self.score = score

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray:
        m = check_m(m, data.n)
        scores = finite_score(data, self.score)
        eligible = hard_prune_mask(scores, self.hard_cutoff)
        if m > int(eligible.sum()):
            raise ValueError(f"m == {m}, must be <= {int(eligible.sum())}: the samples left "
                             f"after hard_cutoff == {self.hard_cutoff} drops the top "
                             f"{data.n - int(eligible.sum())}.")
        if m == 0:
            return check_selection(np.zeros(0, dtype=np.int64), data.n, m)
        regions = make_regions(scores, self.strata, eligible)
        budgets = ccs_budgets(regions.sizes, m)
        rng = np.random.default_rng(seed)
        # Draw in visit order so the random stream, hence the result, is fixed by the seed.
        picked = [rng.choice(regions.members[r], size=int(budgets[r]), replace=False)
                  for r in regions.visit_order()]
        self.edges_, self.budgets_ = regions.edges, budgets
        return check_selection(np.concatenate(picked), data.n, m)


# ----------------------------------------------------------------------------- D2

def knn_graph(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) Euclidean distances and indices of each row's k nearest other rows.

    Memory O(N·k): scikit-learn's brute-force kNN reduces the distances chunk by chunk
    (its ArgKmin backend), never holding the N×N matrix. We ask for k+1 and drop the row
    itself; with exact duplicates the row may not come first, so it is found by index
    (and where it is missing the farthest of the k+1 goes instead).
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="euclidean").fit(x)
    dist, idx = nn.kneighbors(x, return_distance=True)
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True         # exactly one dropped entry per row
    keep = ~is_self
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k)


def d2_forward(scores: np.ndarray, dist: np.ndarray, idx: np.ndarray,
               gamma_forward: float = 1.0) -> np.ndarray:
    """Forward message passing (D2, Eq. 2): ρ_i = s_i + Σ_{j ∈ kNN(i)} exp(−γ_f·d_ij)·s_j.
    Each sample hears its own k nearest neighbours (a fixed fan-in k, so a hub that is in
    many lists is not inflated)."""
    return scores + np.sum(np.exp(-gamma_forward * dist) * scores[idx], axis=1)


def _symmetric_csr(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """The undirected kNN graph (edge i–j if j ∈ kNN(i) or i ∈ kNN(j)) as CSR arrays
    (indptr, indices, distances); mutual neighbours appear once. O(N·k) memory."""
    n, k = idx.shape
    rows = np.concatenate([np.repeat(np.arange(n), k), idx.ravel()])
    cols = np.concatenate([idx.ravel(), np.repeat(np.arange(n), k)])
    d = np.concatenate([dist.ravel(), dist.ravel()])
    key = rows.astype(np.int64) * n + cols
    order = np.argsort(key, kind="stable")
    key, d = key[order], d[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, d = key[first], d[first]
    rows, cols = key // n, key % n
    indptr = np.searchsorted(rows, np.arange(n + 1))
    return indptr, cols, d


def d2_reverse(rho: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
               weights: np.ndarray, m: int) -> np.ndarray:
    """Reverse message passing (D2, Eq. 3), greedy: take k = argmax ρ among the unselected,
    then ρ_j −= w_kj·ρ_k for its graph neighbours j (w_kj = exp(−γ_r·d_kj)); m times.

    A max-heap with lazy updates: a changed ρ_j is pushed again and stale entries are
    skipped when popped, so the cost is O((N + m·deg) log N), not O(N·m). Ties go to the
    lower index (heap order of (−ρ, i)). ``weights`` is aligned with ``indices`` (CSR).
    """
    rho = rho.astype(np.float64).tolist()            # Python floats: fast scalar updates
    heap = [(-r, i) for i, r in enumerate(rho)]
    heapq.heapify(heap)
    selected = np.zeros(len(rho), dtype=bool)
    out = np.empty(m, dtype=np.int64)
    count = 0
    while count < m:
        neg, k = heapq.heappop(heap)
        if selected[k] or -neg != rho[k]:
            continue                                  # already taken, or a stale value
        selected[k] = True
        out[count] = k
        count += 1
        rk = rho[k]
        lo, hi = int(indptr[k]), int(indptr[k + 1])
        for j, w in zip(indices[lo:hi].tolist(), weights[lo:hi].tolist()):
            if not selected[j]:
                rho[j] -= w * rk
                heapq.heappush(heap, (-rho[j], j))
    return out


@register("d2")
class D2Selector:
    """D2 Pruning (Maharana et al., ICLR 2024) over ``data.embeddings`` and ``score`` (EL2N).

    1. kNN graph, k neighbours per sample (self excluded), Euclidean distances, O(N·k).
    2. ``distance_scale="mean"``: distances divided by their mean over the graph, so that
       exp(−d) means the same for any embedding scale (an LLM's mean hidden state has norms
       in the tens to hundreds: raw exp(−d) would be ~0 and D2 would collapse to top-m by
       score). With it the selection is invariant to scaling the embeddings, and a typical
       neighbour gets forward weight e^−1 ≈ 0.37 and reverse weight e^−γ ≈ 0.9, close to
       what the official code sees on unit-norm CLIP features. ``"none"``: raw distances,
       as in the official code.
    3. Forward: ρ_i = s_i + Σ_{j ∈ kNN(i)} exp(−γ_f·d_ij)·s_j (``gamma_forward``, 1 in the
       official code).
    4. Reverse, greedy until m: select k = argmax ρ, then ρ_j −= exp(−γ·d_kj)·ρ_k for its
       neighbours j. ``reverse_graph="symmetric"`` (default) down-weights both k's own kNN
       and the samples that have k among theirs (the undirected kNN graph, as in the
       official code's dense path), so selecting a hub suppresses everything that sees it
       as near. ``"out"``: only k's own k neighbours (the official code's precomputed,
       large-scale path).

    D2 is deterministic: ``seed`` is accepted for the common interface and unused.
    Scores enter linearly, so scaling them by a positive constant leaves the selection
    unchanged.
    """

    def __init__(self, k: int = 5, gamma: float = 0.1, score: str = "el2n",
                 gamma_forward: float = 1.0, distance_scale: str = "mean",
                 reverse_graph: str = "symmetric"):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k == {k!r}, must be an int >= 1.")
        if not (np.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma == {gamma}, must be finite and >= 0.")
        if not (np.isfinite(gamma_forward) and gamma_forward >= 0):
            raise ValueError(f"gamma_forward == {gamma_forward}, must be finite and >= 0.")
        if distance_scale not in ("mean", "none"):
            raise ValueError(f"distance_scale == {distance_scale!r}, must be 'mean' or 'none'.")
        if reverse_graph not in ("symmetric", "out"):
            raise ValueError(f"reverse_graph == {reverse_graph!r}, must be 'symmetric' or 'out'.")
        if not isinstance(score, str) or not score:
            raise ValueError(f"score == {score!r}, must be a non-empty score name.")
        self.k = int(k)
        self.gamma = float(gamma)
        self.score = score
        self.gamma_forward = float(gamma_forward)
        self.distance_scale = distance_scale
        self.reverse_graph = reverse_graph

    def _embeddings(self, data: SelectionInput) -> np.ndarray:
        x = data.embeddings
        if x is None:
            raise ValueError("d2 needs data.embeddings (an (N, d) array), got None.")
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"embeddings have shape {x.shape}, must be (N, d).")
        if x.dtype != np.float64:
            x = x.astype(np.float32, copy=False)    # float32 halves the kNN memory
        if not np.all(np.isfinite(x)):
            raise ValueError("embeddings contain NaN/inf values, must be finite.")
        return x

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray:
        m = check_m(m, data.n)
        scores = finite_score(data, self.score)
        x = self._embeddings(data)
        n = data.n
        if m == 0 or m == n:                          # nothing to rank: all or none
            return check_selection(np.arange(m, dtype=np.int64), n, m)
        k = self.k
        if k > n - 1:
            warnings.warn(f"d2: k == {k} but only {n - 1} other samples; using k = {n - 1}.",
                          stacklevel=2)
            k = n - 1
        dist, idx = knn_graph(x, k)
        dist = dist.astype(np.float64)
        if self.distance_scale == "mean" and dist.mean() > 0:
            dist /= dist.mean()
        rho = d2_forward(scores, dist, idx, self.gamma_forward)
        if self.reverse_graph == "symmetric":
            indptr, indices, d = _symmetric_csr(dist, idx)
        else:
            indptr, indices, d = np.arange(0, n * k + 1, k), idx.ravel(), dist.ravel()
        out = d2_reverse(rho, indptr, indices, np.exp(-self.gamma * d), m)
        self.rho_ = rho
        return check_selection(out, n, m)
