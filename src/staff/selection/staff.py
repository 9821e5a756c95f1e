"""STAFF's LLM verification & selection (paper §3.2, Algorithm 1 lines 4-13). Pure numpy.

1. K regions of equal width over the speculative scores S^s (line 4).
2. Verification: b_v samples drawn at random in each region are scored on the target (line 9-10).
   The target is asked only for these samples, at most K·b_v, once for every pruning rate.
3. V_i = Σ S^t / Σ S^s over region i's verified samples (Eq. 3), after normalising each model's
   scores (see ``normalise``), so a constant factor on either model's scores changes nothing.
4. Regions are visited smallest first (line 8); budget m_B = floor((m - |D'|) V_i / |B|) (Eq. 4),
   capped at the region size and at what is left of m; a random draw inside the region (line 12).
5. The paper's rule can end short of m (regions with V_i < 1, or capped regions). We place the
   leftover among the unselected samples at random, each weighted by its region's V_i
   (``fill='weighted'``; the authors' code draws it uniformly, ``fill='uniform'``): the
   coreset has exactly m = floor(N(1-p)) samples and the leftover still follows the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .base import SelectionInput, check_selection, register

_EPS = 1e-12


# ----------------------------------------------------------------------------- regions

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
        values = np.log(np.maximum(scores, _EPS))
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


# ----------------------------------------------------------------------------- V_i

def normalise(values: np.ndarray, reference: np.ndarray, how: str) -> np.ndarray:
    """Put one model's scores on a scale-free footing. ``reference``: that model's scores on
    all verified samples. 'mean' divides by their mean; 'minmax' maps their range to [0, 1]."""
    if how == "none":
        return values
    if how == "mean":
        return values / max(float(np.mean(reference)), _EPS)
    if how == "minmax":
        lo, hi = float(np.min(reference)), float(np.max(reference))
        return (values - lo) / max(hi - lo, _EPS)
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
        factors[r] = (t.sum() + _EPS) / (s.sum() + _EPS)
    return factors


# ----------------------------------------------------------------------------- selection

@dataclass
class RegionReport:
    region: int
    lo: float
    hi: float
    size: int
    verified: int
    factor: float
    budget: int
    selected: int


def allocate(regions: Regions, factors: np.ndarray, spec: np.ndarray, m: int, seed: int,
             budget_rule: str = "paper", within_region: str = "random",
             even_share: np.ndarray | None = None, fill: str = "weighted",
             ) -> tuple[np.ndarray, list[RegionReport]]:
    """Visit regions smallest first and draw each one's budget; then fill to exactly m.
    ``even_share[r]``: region r was left unverified for being small and gets
    floor((m - |D'|) / |B|) under either rule (the authors' code)."""
    # One random key per sample (by its row, not by its place in a region or in the visit
    # order): a random draw takes a region's smallest keys, the fill the smallest weighted keys.
    # Float noise that moves one sample across a region edge then changes only the draws of
    # the regions whose budget changed, by as many samples as the budget did; one stream
    # consumed region by region changed a third of the coreset (issue 16).
    n = len(regions.of)
    keys = np.random.default_rng([seed, 2]).random(n)
    fill_keys = np.random.default_rng([seed, 3]).random(n)
    order = regions.visit_order()
    available = sum(len(regions.members[r]) for r in order)
    if m > available:
        raise ValueError(f"coreset size m == {m}, but only {available} samples are eligible.")
    chosen: list[np.ndarray] = []
    n_chosen = 0
    reports = {}
    for step, r in enumerate(order):
        members = regions.members[r]
        left = order[step:]
        if even_share is not None and even_share[r]:   # authors' code: small, unverified
            budget = (m - n_chosen) // len(left)
        elif budget_rule == "paper":      # Eq. 4
            budget = int(np.floor((m - n_chosen) * factors[r] / len(left)))
        elif budget_rule == "share":    # authors' code: V_i over the unvisited regions' sum
            budget = int(np.floor((m - n_chosen) * factors[r] / max(factors[left].sum(), _EPS)))
        else:
            raise ValueError(f"budget_rule == {budget_rule!r}, must be 'paper' or 'share'.")
        take = max(0, min(budget, len(members), m - n_chosen))
        picked = _draw(members, take, spec, within_region, keys)
        chosen.append(picked)
        n_chosen += take
        reports[r] = [budget, take]
    selected = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    if n_chosen < m:
        weights = factors if fill == "weighted" else np.ones_like(factors)
        if fill not in ("weighted", "uniform"):
            raise ValueError(f"fill == {fill!r}, must be 'weighted' or 'uniform'.")
        selected = np.concatenate([selected, _fill(regions, weights, selected, m - n_chosen,
                                                   order, fill_keys)])
    counts = np.bincount(regions.of[selected], minlength=len(regions.members))
    table = [RegionReport(region=r, lo=float(regions.edges[r]), hi=float(regions.edges[r + 1]),
                          size=len(regions.members[r]), verified=0, factor=float(factors[r]),
                          budget=reports[r][0], selected=int(counts[r])) for r in order]
    return selected, table


def _draw(members: np.ndarray, take: int, spec: np.ndarray, how: str,
          keys: np.ndarray) -> np.ndarray:
    if take == 0:
        return np.zeros(0, dtype=np.int64)
    if how == "random":  # the `take` smallest of iid uniform keys: a uniform random subset
        if take >= len(members):
            return members
        return members[np.argpartition(keys[members], take - 1)[:take]]
    if how == "top":
        return members[np.argsort(-spec[members], kind="stable")[:take]]
    raise ValueError(f"within_region == {how!r}, must be 'random' or 'top'.")


def _fill(regions: Regions, factors: np.ndarray, selected: np.ndarray, count: int,
          order: list[int], uniforms: np.ndarray) -> np.ndarray:
    """``count`` more unselected eligible samples, drawn with weight V_i of their region
    (``factors``; all ones for the authors' uniform draw among the unselected survivors)."""
    taken = np.zeros(len(regions.of), dtype=bool)
    taken[selected] = True
    pool = np.concatenate([regions.members[r] for r in order])
    pool = pool[~taken[pool]]
    weights = np.maximum(factors[regions.of[pool]], _EPS)
    # Weighted draw without replacement in O(N) (Efraimidis & Spirakis 2006): the `count`
    # smallest keys -log(U)/w. numpy's choice(p=..., replace=False) is much slower at N = 1e6.
    keys = -np.log(uniforms[pool]) / weights
    if count < len(pool):
        return pool[np.argpartition(keys, count - 1)[:count]]
    return pool


@register("staff")
class StaffSelector:
    """STAFF selection over a speculative score, given a target-scoring function.

    ``verify(indices) -> scores`` scores the given sample indices on the target (fresh LoRA).
    It is called once per ``plan`` and its answers are kept in ``target_scores`` (sample index ->
    score), so several pruning rates cost the target nothing more; a run that stored them fills
    ``target_scores`` instead of calling ``verify`` again.
    """

    def __init__(self, verify: Callable[[np.ndarray], np.ndarray], regions: int = 50,
                 verify_per_region: int = 10, normalize: str = "mean", budget_rule: str = "paper",
                 within_region: str = "random", hard_prune: float = 0.0,
                 verify_small_regions: bool = True, score: str = "effort",
                 skip_verification: bool = False, region_edges: str = "equal-width",
                 region_clip: float = 0.01, verify_scale: str = "score",
                 length_adjust: str = "none", fill: str = "weighted",
                 boundary: str = "upper"):
        if regions < 1:
            raise ValueError(f"regions == {regions}, must be >= 1.")
        if verify_per_region < 1:
            raise ValueError(f"verify_per_region == {verify_per_region}, must be >= 1.")
        self.verify = verify
        self.regions = regions
        self.verify_per_region = verify_per_region
        self.normalize = normalize
        self.budget_rule = budget_rule
        self.within_region = within_region
        self.hard_prune = hard_prune
        self.verify_small_regions = verify_small_regions
        self.score = score
        self.skip_verification = skip_verification
        if region_edges not in EDGE_RULES:
            raise ValueError(f"region_edges == {region_edges!r}, must be one of "
                             f"{', '.join(EDGE_RULES)}.")
        if verify_scale not in ("score", "rank"):
            raise ValueError(f"verify_scale == {verify_scale!r}, must be 'score' or 'rank'.")
        if length_adjust not in ("none", "sum", "residual"):
            raise ValueError(f"length_adjust == {length_adjust!r}, must be 'none', 'sum' or "
                             "'residual'.")
        self.region_edges = region_edges
        self.region_clip = region_clip
        self.verify_scale = verify_scale
        self.length_adjust = length_adjust
        self.fill = fill
        self.boundary = boundary
        self.target_scores: dict[int, float] = {}

    def length_weights(self, data: SelectionInput) -> np.ndarray:
        """Per-sample factor of ``length_adjust`` (ones for 'none'), applied to the small and
        the target scores alike. The loss is a mean over response tokens, so a sample's
        gradient averages more token gradients the longer its response: the plain effort
        favours short responses (measured: Spearman -0.73 with length on a QA set)."""
        if self.length_adjust == "none":
            return np.ones(data.n)
        n = np.maximum(data.score("n_response_tokens"), 1.0)
        if self.length_adjust == "sum":   # ||grad of the summed loss|| = n x ||grad of the mean||
            return n
        spec = np.maximum(data.score(self.score), _EPS)
        if np.ptp(np.log(n)) == 0:
            return np.ones(data.n)
        slope = np.polyfit(np.log(n), np.log(spec), 1)[0]   # log effort ~ a + b log n
        self.length_slope_ = float(slope)
        return n ** (-slope)

    def prepare(self, data: SelectionInput, seed: int):
        """Regions, verification plan and V_i; the same for every pruning rate."""
        weights = self.length_weights(data)
        spec = data.score(self.score) * weights
        eligible = hard_prune_mask(spec, self.hard_prune)
        regions = make_regions(spec, self.regions, eligible, self.region_edges,
                               self.region_clip, self.boundary)
        plan = {} if self.skip_verification else plan_verification(
            regions, self.verify_per_region, seed, self.verify_small_regions)
        wanted = np.array(sorted({int(i) for idx in plan.values() for i in idx
                                  if int(i) not in self.target_scores}), dtype=np.int64)
        if len(wanted):
            scores = np.asarray(self.verify(wanted), dtype=np.float64)
            if not np.all(np.isfinite(scores)):
                bad = [str(data.ids[i]) for i, s in zip(wanted, scores) if not np.isfinite(s)]
                raise ValueError(f"the target gave NaN/inf scores for {len(bad)} sample(s): "
                                 f"{', '.join(bad[:5])}")
            self.target_scores.update(zip(wanted.tolist(), scores.tolist()))
        target = {i: t * weights[i] for i, t in self.target_scores.items()}
        factors = verification_factors(spec, plan, target, self.normalize, self.regions,
                                       self.verify_scale)
        self.regions_, self.plan_, self.factors_ = regions, plan, factors
        return regions, plan, factors

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray:
        regions, plan, factors = self.prepare(data, seed)
        spec = data.score(self.score) * self.length_weights(data)
        # Regions left unverified for being small (not all regions, as with verify: false).
        even_share = None
        if not self.skip_verification and not self.verify_small_regions:
            even_share = np.array([r not in plan for r in range(self.regions)])
        selected, table = allocate(regions, factors, spec, m, seed, self.budget_rule,
                                   self.within_region, even_share, self.fill)
        for row in table:
            row.verified = len(plan.get(row.region, ()))
        self.table_ = table
        return check_selection(selected, data.n, m)
