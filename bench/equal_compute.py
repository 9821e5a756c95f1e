"""What a coreset costs end to end against what it buys, in one currency: optimiser steps of
the target's fine-tuning (the cost case of issue 19, session 32).

    python bench/equal_compute.py bench/results/multi30k-powered/results.json \
        [--methods random,ccs,staff] [--out F]

Prints the table `staff bench` also writes into tables.md ("Table 3"), from any bench's
results.json: for every (method, pruning rate) the selection's overhead converted into target
steps at the bench's own seconds per step (the baselines' train-target), plus the coreset's own
fine-tuning steps, beside the held-out loss; rows a cheaper row beats by more than the seeds'
spread are marked dominated. How: src/staff/bench/cost.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.bench.cost import CostError, cost_table  # noqa: E402


def table(results: dict, methods: list[str] | None = None) -> str:
    return cost_table(results, methods)


def main(argv=None) -> None:
    from staff.runs.folder import write_atomic

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a bench's results.json")
    ap.add_argument("--methods", help="comma-separated methods to show (default: every one)")
    ap.add_argument("--out", help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    try:
        results = json.loads(Path(args.results).read_text(encoding="utf-8"))
        text = table(results, args.methods.split(",") if args.methods else None)
    except (OSError, ValueError) as err:  # CostError is a ValueError
        raise SystemExit(f"error: {args.results}: {err}") from None
    print(text, end="")
    if args.out:
        write_atomic(Path(args.out), text.encode("utf-8"))


if __name__ == "__main__":
    main()
