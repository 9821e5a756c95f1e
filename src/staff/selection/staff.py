"""STAFF's LLM verification & selection (paper §3.2, Algorithm 1 lines 4-13). Pure numpy.

1. K regions of equal width over the speculative scores S^s (line 4).
2. Verification: b_v samples drawn at random in each region are scored on the target (line 9-10).
   The target is asked only for these samples, at most K·b_v, once for every pruning rate.
3. V_i = Σ S^t / Σ S^s over region i's verified samples (Eq. 3), after normalising each model's
   scores (see ``verification.normalise``), so a constant factor on either model's scores
   changes nothing.
4. Regions are visited smallest first (line 8); budget m_B = floor((m - |D'|) V_i / |B|) (Eq. 4),
   capped at the region size and at what is left of m; a random draw inside the region (line 12).
5. The paper's rule can end short of m (regions with V_i < 1, or capped regions). We place the
   leftover among the unselected samples at random, each weighted by its region's V_i
   (``fill='weighted'``; the authors' code draws it uniformly, ``fill='uniform'``): the
   coreset has exactly m = floor(N(1-p)) samples and the leftover still follows the target.

Steps 1-3 are in ``regions.py`` (shared with CCS) and ``verification.py``; this module holds the
budget (4), the fill (5) and ``StaffSelector``, which runs the five in order. A variant beyond
the paper (``length_strata``) runs 4-5 inside equal-count response-length strata, each with
its share of m, so the coreset keeps the data's response lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .base import EPS, SelectionInput, check_selection, register
from .regions import EDGE_RULES, Regions, hard_prune_mask, make_regions
from .verification import plan_verification, verification_factors


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
            budget = int(np.floor((m - n_chosen) * factors[r] / max(factors[left].sum(), EPS)))
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
    weights = np.maximum(factors[regions.of[pool]], EPS)
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
                 boundary: str = "upper", length_strata: int = 0):
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
        if length_strata < 0 or length_strata == 1:
            raise ValueError(f"length_strata == {length_strata}, must be 0 (off) or >= 2.")
        self.length_strata = length_strata
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
        spec = np.maximum(data.score(self.score), EPS)
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
        if self.length_strata:
            selected, table = self._allocate_by_length(data, regions, factors, spec, m, seed,
                                                       even_share)
        else:
            selected, table = allocate(regions, factors, spec, m, seed, self.budget_rule,
                                       self.within_region, even_share, self.fill)
        for row in table:
            row.verified = len(plan.get(row.region, ()))
        self.table_ = table
        return check_selection(selected, data.n, m)

    def _allocate_by_length(self, data, regions, factors, spec, m, seed, even_share):
        """``allocate`` inside each of ``length_strata`` equal-count response-length strata,
        each spending its share of m (by its size); the regions and V_i stay the global ones."""
        tokens = data.score("n_response_tokens")
        eligible = np.flatnonzero(regions.of >= 0)
        order = eligible[np.argsort(tokens[eligible], kind="stable")]   # ties: by row
        strata = [part for part in np.array_split(order, self.length_strata) if len(part)]
        sizes = np.array([len(part) for part in strata], dtype=np.float64)
        exact = m * sizes / sizes.sum()
        budgets = np.floor(exact).astype(int)       # largest remainders get the rest of m
        budgets[np.argsort(-(exact - budgets), kind="stable")[:m - budgets.sum()]] += 1
        picked, per_region = [], {}
        for part, budget in zip(strata, budgets):
            if budget == 0:
                continue
            mask = np.zeros(len(regions.of), dtype=bool)
            mask[part] = True
            inside = Regions(edges=regions.edges, of=np.where(mask, regions.of, -1),
                             members=[members[mask[members]] for members in regions.members])
            chosen, rows = allocate(inside, factors, spec, int(budget), seed, self.budget_rule,
                                    self.within_region, even_share, self.fill)
            picked.append(chosen)
            for row in rows:
                total = per_region.setdefault(row.region, [0, 0])
                total[0] += row.budget
                total[1] += row.selected
        table = [RegionReport(region=r, lo=float(regions.edges[r]),
                              hi=float(regions.edges[r + 1]), size=len(regions.members[r]),
                              verified=0, factor=float(factors[r]),
                              budget=per_region.get(r, [0, 0])[0],
                              selected=per_region.get(r, [0, 0])[1])
                 for r in regions.visit_order()]
        return np.concatenate(picked), table
