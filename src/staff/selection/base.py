"""What every selection method shares: the coreset size rule, the input it reads, a registry.

Selection is pure numpy: it never imports torch or transformers. Per-sample quantities come
from the one scoring engine (``staff.scoring``) and are handed over in ``SelectionInput``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..config import ConfigError, SelectionConfig

# Keeps divisions by, and logs of, scores or sums that can be 0 finite (V_i, log-width regions,
# fill weights).
EPS = 1e-12


def auto_sizes(n: int) -> tuple[int, int]:
    """(K, b_v) scaled to N when the config leaves them unset. The paper's K = 50, b_v = 10
    (500 samples on the target) suit tens of thousands of samples; on small data they verify
    much of the data on the target (N = 200: 48%) or fail (N = 20 < K). The rule keeps about
    20 samples per region, K = min(50, max(1, N // 20)), and lets the target score at most
    10% of N (and at most the paper's 500): b_v = min(10, max(1, min(500, N // 10) // K)).
    N >= 5000 gives the paper's values."""
    k = min(50, max(1, n // 20))
    return k, min(10, max(1, min(500, n // 10) // k))


def resolve_sizes(n: int, cfg: SelectionConfig) -> SelectionConfig:
    """``cfg`` with unset K / b_v replaced by :func:`auto_sizes` of N (the same object when
    both are set)."""
    import dataclasses
    import logging

    if cfg.regions is not None and cfg.verify_per_region is not None:
        return cfg
    k, b = auto_sizes(n)
    k = k if cfg.regions is None else cfg.regions
    if cfg.verify_per_region is None:
        b = min(10, max(1, min(500, n // 10) // k))
    else:
        b = cfg.verify_per_region
    logging.getLogger(__name__).info(
        "selection.regions = %d, selection.verify_per_region = %d: scaled to N = %d by "
        "K = min(50, max(1, N // 20)), b_v = min(10, max(1, min(500, N // 10) // K)) "
        "(set them to choose)", k, b, n)
    return dataclasses.replace(cfg, regions=k, verify_per_region=b)


def check_sizes(n: int, cfg: SelectionConfig) -> None:
    """Options that cannot work with N samples, as one-line errors before any work."""
    if cfg.method == "staff" and cfg.regions > n:
        raise ConfigError(f"selection.regions == {cfg.regions}, must be <= the number of "
                          f"samples N == {n}.")
    # Samples a method drops before picking: the coreset must fit in what is left, or the
    # error would come only at pick, after the models ran.
    dropped = {"staff": ("selection.hard_prune", cfg.hard_prune),
               "ccs": ("selection.ccs_hard_cutoff", cfg.ccs_hard_cutoff)}.get(cfg.method)
    for p in cfg.pruning_rates:
        m = coreset_size(n, p)
        if m < 1:
            raise ConfigError(f"selection.pruning_rates has {p}: with N == {n} the coreset "
                              "would be empty.")
        if dropped:
            eligible = n - int(math.floor(n * dropped[1]))
            if m > eligible:
                raise ConfigError(f"{dropped[0]} == {dropped[1]} leaves {eligible} of {n} "
                                  f"samples, fewer than the coreset of {m} at pruning rate "
                                  f"{p}: it must be <= that rate.")


def coreset_size(n: int, pruning_rate: float) -> int:
    """m = floor(N * (1 - p)) with p read as the decimal it was written as: N=10, p=0.7 gives 3
    (10 * 0.3 is 2.9999999999999996 in floating point) and N=3, p=0.33333333334 gives 1 (a
    rounding fudge would give 2)."""
    if not 0.0 < pruning_rate < 1.0:
        raise ValueError(f"pruning rate == {pruning_rate}, must be in (0, 1).")
    # repr() is the shortest decimal that reads back as this float: exact rational arithmetic
    # on it is the rate the user wrote.
    return int(math.floor(n * (1 - Fraction(repr(float(pruning_rate))))))


@dataclass
class SelectionInput:
    """Per-sample quantities of N samples, row i of every array is sample ``ids[i]``.

    scores: named per-sample scores, e.g. "effort" (gradient norm), "el2n", "loss".
    embeddings: (N, d) float array (mean response hidden state), for coverage methods.
    """

    ids: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids)
        n = len(self.ids)
        for name, values in self.scores.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (n,):
                raise ValueError(f"score {name!r} has shape {values.shape}, expected ({n},).")
            self.scores[name] = values
        if self.embeddings is not None and len(self.embeddings) != n:
            raise ValueError(f"embeddings have {len(self.embeddings)} rows, expected {n}.")

    @property
    def n(self) -> int:
        return len(self.ids)

    def score(self, name: str) -> np.ndarray:
        if name not in self.scores:
            raise ValueError(f"this method needs the per-sample score {name!r}; have "
                             f"{sorted(self.scores) or 'none'}.")
        return self.scores[name]


def check_m(m: int, n: int) -> int:
    """The coreset size a baseline was asked for, as an int in [0, n], or a one-line error."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise ValueError(f"m == {m!r}, must be an int.")
    if not 0 <= m <= n:
        raise ValueError(f"m == {m}, must be in [0, {n}] (the number of samples).")
    return int(m)


def finite_score(data: SelectionInput, name: str) -> np.ndarray:
    """``data.score(name)``, refused when a NaN/inf would make the ranking meaningless."""
    s = data.score(name)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"score {name!r} has {int(np.sum(~np.isfinite(s)))} NaN/inf "
                         "value(s), must be finite.")
    return s


class Selector(Protocol):
    """A selection method: ``select`` returns exactly m distinct row indices (int64)."""

    name: str

    def select(self, data: SelectionInput, m: int, seed: int) -> np.ndarray: ...


SELECTORS: dict[str, Callable[..., Selector]] = {}


def register(name: str):
    """Class decorator: make a selector available by name (``--method NAME``)."""

    def wrap(cls):
        cls.name = name
        SELECTORS[name] = cls
        return cls

    return wrap


def check_selection(indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """Internal invariant of every selector: m distinct indices in [0, n)."""
    indices = np.asarray(indices, dtype=np.int64)
    assert len(indices) == m, (len(indices), m)
    assert m == 0 or (indices.min() >= 0 and indices.max() < n)
    taken = np.zeros(n, dtype=bool)  # O(N): np.unique sorts, 0.3 s per rate at 1M samples
    taken[indices] = True
    assert int(taken.sum()) == m, "repeated indices"
    return indices
