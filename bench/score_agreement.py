"""How far do two scorings of the same samples agree? (issue 19)

    python bench/score_agreement.py REF_RUN RUN [RUN ...] [--names a,b,...] [--k 50] \
        [--out bench/results/stage1/agreement.json]

Each RUN is a STAFF selection run folder with a scores.csv (e.g. a bench's select/staff/s0):
stage 1 with another number of epochs, another scoring scope, or another small model (a
draft), against the reference run on the same samples. For each run against the reference:

  * Spearman's rho of the effort scores (the ranks STAFF's regions follow);
  * the adjusted Rand index of the K regions each scoring induces (equal-width, Algorithm 1's,
    unless ``--edges`` names another rule of ``selection.region_edges``) (the plain Rand
    index is near 0.93 for unrelated scores at K = 50: BENCHMARKS.md, issue 9), beside the
    adjusted index of the reference against itself shuffled (chance) and the index that two
    Gaussian scores with the same ρ would have (what ρ alone implies: fine regions disagree a
    lot even at ρ = 0.9);
  * the overlap of the lowest and the highest effort deciles (Jaccard), the samples STAFF's
    rule over-draws most.

Needs no model. Samples are matched by id; a run may hold a subset of the reference's samples
(then both are compared on it); other ids are an error naming the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_rand_score, rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.selection.regions import EDGE_RULES, make_regions  # noqa: E402


def read_scores(run_dir: Path, score: str) -> pd.Series:
    path = Path(run_dir) / "scores.csv"
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except OSError as err:
        raise SystemExit(f"{path}: cannot read ({err.strerror or err})") from None
    if score not in frame.columns:
        raise SystemExit(f"{path}: no column {score!r} (has {', '.join(frame.columns)})")
    return frame.set_index("id")[score].astype(float)


def region_labels(scores: np.ndarray, k: int, edges: str = "equal-width") -> np.ndarray:
    """The region of each sample under the selector's own rule (``selection.region_edges``;
    Algorithm 1's equal widths by default)."""
    return make_regions(scores, k, edges=edges).of


def ari_expected(a: np.ndarray, b: np.ndarray, rho: float, k: int, edges: str,
                 draws: int = 5, seed: int = 0) -> float:
    """The ARI two scorings with these two score distributions, Spearman ``rho`` and nothing
    else in common would have: Gaussian pairs whose Spearman is ``rho`` (Pearson
    2 sin(pi rho / 6)), their ranks mapped onto the sorted ``a`` and ``b`` (so equal-width
    regions see the real shapes), the mean over ``draws``. A run's ARI near this says its
    regions differ from the reference's no more than its rank correlation implies."""
    r = float(np.clip(2 * np.sin(np.pi * rho / 6), -1.0, 1.0))
    rng = np.random.default_rng(seed)
    sorted_a, sorted_b = np.sort(a), np.sort(b)
    values = []
    for _ in range(draws):
        x = rng.standard_normal(len(a))
        y = r * x + np.sqrt(1 - r * r) * rng.standard_normal(len(a))
        fake_a = sorted_a[np.argsort(np.argsort(x))]
        fake_b = sorted_b[np.argsort(np.argsort(y))]
        values.append(adjusted_rand_score(region_labels(fake_a, k, edges),
                                          region_labels(fake_b, k, edges)))
    return float(np.mean(values))


def decile_sets(scores: np.ndarray) -> tuple[set, set]:
    lo, hi = np.quantile(scores, [0.1, 0.9])
    return set(np.flatnonzero(scores <= lo)), set(np.flatnonzero(scores >= hi))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def agreement(ref: pd.Series, other: pd.Series, k: int, name: str, seed: int = 0,
              edges: str = "equal-width") -> dict:
    """A run may score a subset of the reference's samples (bench/score_checkpoint.py --probe):
    both are then compared on that subset, regions over its own range."""
    subset = set(other.index) < set(ref.index)
    if subset:
        ref = ref.loc[other.index]
    elif set(ref.index) != set(other.index):
        missing = len(set(ref.index) ^ set(other.index))
        raise SystemExit(f"{name}: {missing} sample id(s) differ from the reference run's: "
                         "compare runs over the same data (or a subset of it)")
    a = ref.to_numpy()
    b = other.reindex(ref.index).to_numpy()
    labels_a, labels_b = region_labels(a, k, edges), region_labels(b, k, edges)
    shuffled = np.random.default_rng(seed).permutation(a)
    lo_a, hi_a = decile_sets(a)
    lo_b, hi_b = decile_sets(b)
    rho = float(spearmanr(a, b)[0])
    return {"name": name, "n": len(a), "k": k, "edges": edges,
            "spearman": round(rho, 4),
            "ari_expected": round(ari_expected(a, b, rho, k, edges, seed=seed), 4),
            "ari": round(float(adjusted_rand_score(labels_a, labels_b)), 4),
            "ari_chance": round(float(adjusted_rand_score(labels_a,
                                                          region_labels(shuffled, k, edges))), 4),
            "rand": round(float(rand_score(labels_a, labels_b)), 4),
            "lowest_decile_jaccard": round(jaccard(lo_a, lo_b), 3),
            "highest_decile_jaccard": round(jaccard(hi_a, hi_b), 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", help="the reference run folder (its scores.csv)")
    ap.add_argument("runs", nargs="+", help="run folders to compare with it")
    ap.add_argument("--names", help="comma-separated names for the runs (default: folders)")
    ap.add_argument("--k", type=int, default=50, help="regions (default 50, the paper's K)")
    ap.add_argument("--edges", default="equal-width", choices=EDGE_RULES,
                    help="how the K regions are cut (selection.region_edges; default "
                         "equal-width, Algorithm 1)")
    ap.add_argument("--score", default="effort", help="scores.csv column (default effort)")
    ap.add_argument("--out", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    names = args.names.split(",") if args.names else [str(r) for r in args.runs]
    if len(names) != len(args.runs):
        raise SystemExit(f"--names has {len(names)} names for {len(args.runs)} runs")
    ref = read_scores(Path(args.reference), args.score)
    rows = [agreement(ref, read_scores(Path(r), args.score), args.k, name, edges=args.edges)
            for r, name in zip(args.runs, names)]
    print("| run | n | Spearman ρ | ARI of K regions (chance) | ARI expected from ρ alone | Rand "
          "| lowest / highest decile Jaccard |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['n']} | {r['spearman']:.3f} | {r['ari']:.3f} "
              f"({r['ari_chance']:.3f}) | {r['ari_expected']:.3f} | {r['rand']:.3f} | {r['lowest_decile_jaccard']:.2f} / "
              f"{r['highest_decile_jaccard']:.2f} |")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"reference": args.reference, "rows": rows}, indent=2) + "\n",
                       encoding="utf-8")


if __name__ == "__main__":
    main()
