"""The baselines that keep the m samples ranked highest by one per-sample score (length,
EL2N, GraNd), and the uniform random draw they are all measured against. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from ..base import SelectionInput, check_m, check_selection, finite_score, register

__all__ = ["LengthSelector", "RandomSelector", "EL2NSelector", "GraNdSelector"]


def top_m(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m highest scores, highest first; ties go to the lower index."""
    # lexsort: the last key is the primary one. O(N log N); N is at most ~1e6 here.
    return np.lexsort((np.arange(len(scores)), -scores))[:m]


@register("length")
class LengthSelector:
    """The m samples with the most response tokens: the simple length filter reported as a
    strong baseline for instruction data (e.g. Zhao et al., 2024, "Long Is More for
    Alignment"). Ties (many samples share a length) are broken by a seeded random order, so
    seeds draw different coresets among equally long samples."""

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray:
        m = check_m(m, data.n)
        lengths = finite_score(data, "n_response_tokens")
        tie_break = np.random.default_rng(seed).permutation(data.n)
        return check_selection(np.lexsort((tie_break, -lengths))[:m], data.n, m)


@register("random")
class RandomSelector:
    """A uniform draw of m samples without replacement (``np.random.default_rng(seed)``)."""

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray:
        m = check_m(m, data.n)
        rng = np.random.default_rng(seed)
        return check_selection(rng.choice(data.n, size=m, replace=False), data.n, m)


class _TopScoreSelector:
    """Keep the m samples with the highest ``score`` (the "hard" samples)."""

    def __init__(self, score: str):
        if not isinstance(score, str) or not score:
            raise ValueError(f"score == {score!r}, must be a non-empty score name.")
        self.score = score

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray:
        # seed is unused: the ranking is deterministic (ties -> lower index).
        m = check_m(m, data.n)
        return check_selection(top_m(finite_score(data, self.score), m), data.n, m)


@register("el2n")
class EL2NSelector(_TopScoreSelector):
    """EL2N (Paul et al., 2021): keep the m highest mean ‖softmax(z_t) − onehot(y_t)‖₂."""

    def __init__(self, score: str = "el2n"):
        super().__init__(score)


@register("grand")
class GraNdSelector(_TopScoreSelector):
    """GraNd (Paul et al., 2021): keep the m highest per-sample gradient norms ‖∇_φ L‖₂
    (the scoring engine's "effort" score, on the fine-tuned target)."""

    def __init__(self, score: str = "effort"):
        super().__init__(score)
