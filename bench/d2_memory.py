"""D2 Pruning at scale: wall time and peak memory on synthetic embeddings.

    python bench/d2_memory.py                      # N=100,000, d=256, p=0.9 (m=10,000)
    python bench/d2_memory.py --p 0.9 0.1          # also m=90,000

Each pruning rate runs in a fresh subprocess, so its peak RSS (getrusage ru_maxrss) is its
own. Reported per run: RSS after imports, RSS with the embeddings in memory (the baseline
before the kNN index is built), peak RSS, and the time of the kNN graph and of the whole
selection. Embeddings: ``--clusters`` Gaussian clusters, float32; scores: uniform random.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KB on Linux


def child(n: int, dim: int, clusters: int, p: float, k: int, seed: int) -> dict:
    import numpy as np

    from staff.selection.baselines import coverage
    from staff.selection.base import SelectionInput, coreset_size

    after_imports = rss_mb()
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 4.0, (clusters, dim)).astype(np.float32)
    label = rng.integers(0, clusters, n)
    x = centers[label]
    x += rng.standard_normal((n, dim), dtype=np.float32)     # in place: one N×d array
    data = SelectionInput(ids=np.arange(n), scores={"el2n": rng.random(n)}, embeddings=x)
    m = coreset_size(n, p)
    before_index = rss_mb()

    timing = {}
    knn = coverage.knn_graph

    def timed_knn(*args, **kwargs):             # time the kNN step inside select()
        t = time.perf_counter()
        out = knn(*args, **kwargs)
        timing["knn_s"] = time.perf_counter() - t
        return out

    coverage.knn_graph = timed_knn
    t0 = time.perf_counter()
    sel = coverage.D2Selector(k=k).select(data, m, seed=0)
    total = time.perf_counter() - t0
    assert len(sel) == m
    return {"n": n, "dim": dim, "p": p, "m": m, "k": k,
            "rss_after_imports_mb": round(after_imports, 1),
            "rss_before_index_mb": round(before_index, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "embeddings_mb": round(x.nbytes / 2**20, 1),
            "knn_s": round(timing["knn_s"], 2),
            "greedy_and_rest_s": round(total - timing["knn_s"], 2),
            "select_s": round(total, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--p", type=float, nargs="+", default=[0.9], help="pruning rates")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.n, args.dim, args.clusters, args.p[0], args.k, args.seed)))
        return
    for p in args.p:
        cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--dim", str(args.dim),
               "--clusters", str(args.clusters), "--p", str(p), "--k", str(args.k),
               "--seed", str(args.seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"D2  N={r['n']:,} d={r['dim']} k={r['k']} p={r['p']} m={r['m']:,}: "
              f"select {r['select_s']} s (kNN {r['knn_s']} s, message passing "
              f"{r['greedy_and_rest_s']} s); RSS after imports {r['rss_after_imports_mb']} MB, "
              f"before index {r['rss_before_index_mb']} MB (embeddings "
              f"{r['embeddings_mb']} MB), peak {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
