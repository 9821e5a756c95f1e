"""Where on the test set does a method differ from Random? (issues 14 and 15)

    python bench/strata.py RESULTS_JSON|BENCH_DIR TEST_JSONL --field summary1 [--method staff]
        [--baseline random] [--rate 0.9] [--strata 3] [--protocol steps]
        [--baseline-protocol epochs]

A bench's headline is one mean difference over all test examples. STAFF's coresets lean to
short responses (effort falls with response length: BENCHMARKS.md, the effort analysis), so a
difference could hide in the mean: better on short references, worse on long ones. This splits
the test examples into equal-count strata by the length (words) of their reference ``--field``
and gives the paired difference method − baseline per stratum, with the same two-level
bootstrap interval as the bench's tables (``staff.bench.stats``), from the per-example values
in results.json. The test rows are the file's first rows, in order, as the bench reads them.
``--protocol`` picks the training protocol of the method's cells (and of the baseline's, unless
``--baseline-protocol`` says otherwise: e.g. Random's `steps` cells against its `epochs` ones).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.bench.stats import paired_bootstrap  # noqa: E402

METRICS = {"loss": "loss", "rouge_l": "ROUGE-L"}


def per_seed(results: dict, method: str, rate: float, metric: str,
             protocol: str = "epochs") -> dict[int, np.ndarray]:
    """{seed: per-example values} of one method's cells at one rate and protocol (a cell's key
    is method/pRATE/sSEED, with /PROTOCOL after it for any protocol but epochs)."""
    found = {}
    for key, values in results["per_example"].items():
        parts = key.split("/")
        theirs = parts[3] if len(parts) == 4 else "epochs"
        if (len(parts) in (3, 4) and parts[0] == method and parts[1] == f"p{rate:.2f}"
                and theirs == protocol and metric in values):
            found[int(parts[2].lstrip("s"))] = np.asarray(values[metric], dtype=np.float64)
    return found


def reference_lengths(test_path: Path, field: str, n: int) -> np.ndarray:
    lengths = []
    with open(test_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if len(lengths) == n:
                break
            row = json.loads(line)
            if field not in row:
                raise SystemExit(f"{test_path}:{number}: no field {field!r} "
                                 f"(has {', '.join(row)})")
            lengths.append(len(str(row[field]).split()))
    if len(lengths) < n:
        raise SystemExit(f"{test_path}: {len(lengths)} rows, the results have {n} examples")
    return np.array(lengths)


def strata_table(results: dict, lengths_of, method: str, baseline: str, rate: float,
                 strata: int, n_boot: int = 10_000, protocol: str = "epochs",
                 baseline_protocol: str | None = None) -> list[dict]:
    """One row per (metric, stratum): the reference-length range, the examples in it, and the
    paired difference with its interval. ``lengths_of(n)``: the first n references' lengths."""
    rows = []
    for metric in METRICS:
        a = per_seed(results, method, rate, metric, protocol)
        b = per_seed(results, baseline, rate, metric, baseline_protocol or protocol)
        if not a or not b:
            continue
        n = len(next(iter(a.values())))
        lengths = lengths_of(n)
        # Equal-count strata by rank (ties broken by position), so each holds n / strata.
        order = np.argsort(lengths, kind="stable")
        for k, chunk in enumerate(np.array_split(order, strata)):
            diff = paired_bootstrap({s: v[chunk] for s, v in a.items()},
                                    {s: v[chunk] for s, v in b.items()}, n_boot=n_boot)
            if diff is None:
                continue
            rows.append({"metric": metric, "stratum": k + 1, "n": len(chunk),
                         "words": (int(lengths[chunk].min()), int(lengths[chunk].max())),
                         "mean": diff.mean, "low": diff.low, "high": diff.high,
                         "seeds": diff.seeds, "excludes_zero": diff.excludes_zero})
    return rows


def markdown(rows: list[dict], method: str, baseline: str, rate: float) -> str:
    lines = [f"| metric | reference words | examples | {method} − {baseline} at p = {rate} [95%] "
             "| seeds |", "|---|---|---:|---:|---:|"]
    for r in rows:
        digits = 1 if r["metric"] == "rouge_l" else 4  # ROUGE-L is stored in percent
        star = " *" if r["excludes_zero"] else ""
        lines.append(f"| {METRICS[r['metric']]} | {r['words'][0]}–{r['words'][1]} | {r['n']} | "
                     f"{r['mean']:+.{digits}f} [{r['low']:+.{digits}f}, {r['high']:+.{digits}f}]{star} | {r['seeds']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--field", required=True, help="the reference field, e.g. summary1")
    parser.add_argument("--method", default="staff")
    parser.add_argument("--baseline", default="random")
    parser.add_argument("--rate", type=float, default=0.9)
    parser.add_argument("--strata", type=int, default=3)
    parser.add_argument("--protocol", default="epochs", choices=("epochs", "steps"),
                        help="the training protocol of the method's cells (and the baseline's)")
    parser.add_argument("--baseline-protocol", choices=("epochs", "steps"),
                        help="the baseline's, when it differs from --protocol")
    args = parser.parse_args(argv)
    if args.results.is_dir():  # a bench folder or a published results folder
        args.results = args.results / "results.json"
    if not args.results.is_file():
        raise SystemExit(f"{args.results}: no such file (give a bench's results.json or its folder)")
    results = json.loads(args.results.read_text())
    rows = strata_table(results, lambda n: reference_lengths(args.test, args.field, n),
                        args.method, args.baseline, args.rate, args.strata,
                        protocol=args.protocol, baseline_protocol=args.baseline_protocol)
    method = args.method if args.protocol == "epochs" else f"{args.method} ({args.protocol})"
    theirs = args.baseline_protocol or args.protocol
    baseline = args.baseline if theirs == "epochs" else f"{args.baseline} ({theirs})"
    if not rows:
        raise SystemExit(f"{args.results}: no per-example values for both {method} and "
                         f"{baseline} at p = {args.rate}")
    print(markdown(rows, method, baseline, args.rate))


if __name__ == "__main__":
    main()
