"""STAFF's verification (paper §3.2, Algorithm 1 lines 9-10, Eq. 3). Pure numpy.

b_v samples drawn at random in each region are scored on the target, once for every pruning
rate; V_i = Σ S^t / Σ S^s over region i's verified samples, after normalising each model's
scores, says how much more (or less) the target values region i than the small model did.
"""

from __future__ import annotations

import numpy as np

from .base import EPS
from .regions import Regions


def plan_verification(regions: Regions, per_region: int, seed: int,
                      verify_small_regions: bool = True) -> dict[int, np.ndarray]:
    """b_v sample indices drawn at random in each region to score on the target
    (min(b_v, |B_i|), Algorithm 1 line 9). Independent of the pruning rate."""
    rng = np.random.default_rng([seed, 1])
    plan = {}
    for r in regions.visit_order():
        members = regions.members[r]
        if len(members) <= per_region and not verify_small_regions:
            continue
        take = min(per_region, len(members))
        plan[r] = np.sort(rng.choice(members, size=take, replace=False))
    return plan


def normalise(values: np.ndarray, reference: np.ndarray, how: str) -> np.ndarray:
    """Put one model's scores on a scale-free footing. ``reference``: that model's scores on
    all verified samples. 'mean' divides by their mean; 'minmax' maps their range to [0, 1]."""
    if how == "none":
        return values
    if how == "mean":
        return values / max(float(np.mean(reference)), EPS)
    if how == "minmax":
        lo, hi = float(np.min(reference)), float(np.max(reference))
        return (values - lo) / max(hi - lo, EPS)
    raise ValueError(f"normalize == {how!r}, must be one of 'mean', 'minmax', 'none'.")


def verification_factors(spec: np.ndarray, plan: dict[int, np.ndarray],
                         target: dict[int, float], how: str, k: int,
                         scale: str = "score") -> np.ndarray:
    """V_i per region (Eq. 3); 1.0 for regions that were not verified.
    ``target`` maps a verified sample index to its target score. ``scale`` 'rank': both
    models' scores are first replaced by their rank among all verified samples (1..n), so
    V_i compares where a region's samples stand for each model, not how large the scores of
    a tuned and an untuned model are."""
    factors = np.ones(k)
    if not plan:
        return factors
    verified = np.concatenate(list(plan.values()))
    if scale == "rank":
        from scipy.stats import rankdata

        t_rank = rankdata([target[i] for i in verified])
        s_rank = rankdata(spec[verified])
        target = dict(zip(verified.tolist(), t_rank.tolist()))
        spec = spec.astype(np.float64).copy()
        spec[verified] = s_rank
    elif scale != "score":
        raise ValueError(f"verify_scale == {scale!r}, must be 'score' or 'rank'.")
    t_all = np.array([target[i] for i in verified], dtype=np.float64)
    if len(t_all) > 1 and np.ptp(t_all) == 0:
        # Every V_i would be ~0 (minmax, or all-zero scores) or say nothing: the coreset would
        # come from the fill alone, silently. A target gradient that is the same (zero) for
        # every sample means no trainable tensor was in scope.
        raise ValueError(f"the target gave the same score ({t_all[0]:g}) to all {len(t_all)} "
                         "verified samples, so V_i carries no information; likely no LoRA "
                         "tensor in scoring.scope is trainable on the target (check "
                         "lora.target_modules and scoring.scope).")
    s_all = spec[verified]
    for r, idx in plan.items():
        t = normalise(np.array([target[i] for i in idx], dtype=np.float64), t_all, how)
        s = normalise(spec[idx], s_all, how)
        factors[r] = (t.sum() + EPS) / (s.sum() + EPS)
    return factors
