"""Paired differences between two methods with a bootstrap confidence interval.

A cell's metric is a mean over held-out examples, and a method's figure a mean over seeds. Two
sources of noise make it move: which test examples were drawn, and which seed (the coreset's
draw, LoRA's initialisation, the batch order). The difference between two methods is therefore
bootstrapped at both levels at once, keeping the pairing on both:

- the same test example is scored for both methods, so examples are resampled jointly;
- seed s of one method is paired with seed s of the other (with a shared stage 1 and the same
  fine-tuning seed, they share more than chance), so seeds are resampled jointly too.

Each bootstrap draw takes S seeds and n examples with replacement and averages the per-example
differences over them; the interval is the 2.5th-97.5th percentile of B such draws. With one
seed only the examples are resampled, and the interval then ignores seed noise (the tables
say how many seeds a difference rests on). scipy.stats.bootstrap resamples one level only,
so the two-level draw is written out here with multinomial weights (a few lines of numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Difference:
    """mean(a - b) over the common seeds and examples, and its bootstrap interval."""

    mean: float
    low: float
    high: float
    seeds: int        # common seeds the difference rests on
    examples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: dict, b: dict, n_boot: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> Difference | None:
    """Difference a - b of two methods' per-example values, ``{seed: array (n,)}`` each, over
    the seeds both have. None when they share no seed. Examples must line up (same test
    split, same order) and have the same length in every seed."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    diffs = np.array([np.asarray(a[s], dtype=np.float64) - np.asarray(b[s], dtype=np.float64)
                      for s in common])                                   # (S, n)
    if diffs.ndim != 2 or diffs.shape[1] == 0:
        raise ValueError("per-example values must be non-empty arrays of one length.")
    if not np.all(np.isfinite(diffs)):
        raise ValueError("per-example values must be finite.")
    n_seeds, n = diffs.shape
    rng = np.random.default_rng(seed)
    # Multinomial counts are the bootstrap's "draw with replacement": weight_s (B, S) and
    # weight_e (B, n); draw b's mean is weight_s[b] @ diffs @ weight_e[b] / (S n).
    stats = np.empty(n_boot)
    chunk = max(1, 4_000_000 // max(n, 1))  # bound memory at a few tens of MB
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        w_seed = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=size)
        w_example = rng.multinomial(n, np.full(n, 1.0 / n), size=size)
        stats[start:start + size] = np.einsum("bs,sn,bn->b", w_seed, diffs, w_example) / (
            n_seeds * n)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return Difference(mean=float(diffs.mean()), low=float(low), high=float(high),
                      seeds=n_seeds, examples=n)
