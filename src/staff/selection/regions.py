"""Regions over per-sample scores: STAFF's K regions (paper §3.2, Algorithm 1 line 4) and the
strata of CCS, which draws them by the same rule. Pure numpy.

A region holds samples with alike scores, so a random draw from a crowded one thins out
redundancy. ``staff.py`` verifies and budgets the regions; ``baselines/coverage.py`` (CCS)
draws from them as strata. Both may first drop the top scores (``hard_prune_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import EPS


@dataclass
class Regions:
    """Equal-width regions over scores. ``of[i]`` is sample i's region; ``members[r]`` the
    sample indices of region r (possibly empty); ``edges`` the K+1 boundaries."""

    edges: np.ndarray
    of: np.ndarray
    members: list[np.ndarray]

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(m) for m in self.members])

    def visit_order(self) -> list[int]:
        """Non-empty regions, fewest samples first; ties: the lower scores first."""
        sizes = self.sizes
        return [int(r) for r in np.lexsort((np.arange(len(sizes)), sizes)) if sizes[r] > 0]


EDGE_RULES = ("equal-width", "quantile-clipped", "log", "equal-count")


def make_regions(scores: np.ndarray, k: int, eligible: np.ndarray | None = None,
                 edges: str = "equal-width", clip: float = 0.01,
                 boundary: str = "upper") -> Regions:
    """K regions over the eligible scores; O(N log N). Ineligible samples (hard-pruned)
    belong to no region (region -1). ``edges``:

    - 'equal-width' (Algorithm 1 line 4): K equal widths over [min, max];
    - 'quantile-clipped': K equal widths over the [clip, 1 - clip] quantiles; the samples
      beyond them join the end regions. A heavy tail (a few samples with a huge effort)
      otherwise stretches [min, max] so that nearly every sample lands in one or two regions
      and the verification has nothing to tell apart;
    - 'log': K equal widths over log(score) (effort is a norm: positive, often log-normal);
    - 'equal-count': edges at the k/K quantiles, about N/K samples per region.

    A score exactly on an inner edge goes to the region above it (``boundary='upper'``,
    regions [e_i, e_i+1)) or below it (``'lower'``, regions (e_i, e_i+1], the authors' code);
    the minimum is always in region 0 and the maximum in region K-1."""
    if boundary not in ("upper", "lower"):
        raise ValueError(f"boundary == {boundary!r}, must be 'upper' or 'lower'.")
    scores = np.asarray(scores, dtype=np.float64)
    eligible = np.ones(len(scores), bool) if eligible is None else eligible
    values = scores
    if edges == "log":
        values = np.log(np.maximum(scores, EPS))
    elif edges not in EDGE_RULES:
        raise ValueError(f"region_edges == {edges!r}, must be one of {', '.join(EDGE_RULES)}.")
    pool = values[eligible]
    if edges == "equal-count":
        bounds = np.quantile(pool, np.linspace(0.0, 1.0, k + 1))
        side = "right" if boundary == "upper" else "left"
        region = np.searchsorted(bounds[1:-1], values, side=side).astype(np.int64)
    else:
        if edges == "quantile-clipped":
            lo, hi = np.quantile(pool, [clip, 1.0 - clip])
        else:
            lo, hi = pool.min(), pool.max()
        bounds = np.linspace(lo, hi, k + 1)
        if hi > lo:
            # The same arithmetic for every scale: (s - lo) / (hi - lo) is scale-free.
            position = (values - lo) / (hi - lo) * k
            region = (np.floor(position) if boundary == "upper"
                      else np.ceil(position) - 1).astype(np.int64)
        else:
            region = np.zeros(len(scores), dtype=np.int64)
    if edges == "log":
        bounds = np.exp(bounds)
    region = np.clip(region, 0, k - 1)
    region[~eligible] = -1
    order = np.argsort(region, kind="stable")
    starts = np.searchsorted(region[order], np.arange(k + 1))
    members = [order[starts[r]:starts[r + 1]] for r in range(k)]
    return Regions(edges=bounds, of=region, members=members)


def hard_prune_mask(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Eligible samples after dropping the top ``fraction`` by score (the authors' code, 0.1)."""
    eligible = np.ones(len(scores), dtype=bool)
    n_drop = int(np.floor(len(scores) * fraction))
    if n_drop:
        eligible[np.argsort(-np.asarray(scores), kind="stable")[:n_drop]] = False
    return eligible
