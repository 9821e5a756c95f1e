"""What a coreset costs end to end against what it buys, in one currency: optimiser steps of
the target's fine-tuning (the cost case of issue 19, session 32).

    python bench/equal_compute.py bench/results/multi30k-powered/results.json [--out F]

For every (method, pruning rate) with cells of the `epochs` protocol: the selection's overhead
(train-small + score + verify for STAFF, train-target + score-target for the baselines, ~0 for
Random and Length) converted into target steps at the bench's own rate, the baselines'
train-target seconds over its steps (the same model, recipe and batch size as a cell's
fine-tuning, timed in the same bench), plus the cell's own fine-tuning steps; beside it the
held-out loss, mean ± sd over seeds. The full-data cell, where the bench has one, is a row too (p = 0). Rows are sorted by
that total. A row is *dominated* when a
row that costs no more has a lower mean loss by more than both rows' seed sd together: then
the extra compute bought nothing a cheaper choice does not give.

Seconds on shared cores vary between sessions (BENCHMARKS.md says by how much), and a selection
that took a stage from another run carries that run's seconds: each method's overhead is the
least over its selection runs (the same stage-1 work, timed wherever it ran). Needs
results.json only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


BASELINES = ("ccs", "grand", "el2n", "d2")   # whose overhead is train-target + score-target


def target_step_seconds(results: dict) -> tuple[float, int]:
    """(seconds per target optimiser step, full-data steps) from the baselines' train-target,
    whose step count is the full data's: a cell at rate p trains (1 - p) of it."""
    cells = [c for c in results.get("cells", {}).values()
             if c.get("protocol", "epochs") == "epochs" and c.get("rate") and c.get("steps")]
    if not cells:
        raise SystemExit("no coreset cells with a step count in this results.json")
    full = [c["steps"] for c in results.get("cells", {}).values()
            if c.get("method") == "full" and c.get("steps")]
    # Without a full-data cell: the largest coreset's steps scaled to all N (steps are whole
    # batches, so this is within a batch per epoch of the full data's count).
    largest = min(cells, key=lambda c: c["rate"])
    full_steps = full[0] if full else round(largest["steps"] / (1 - largest["rate"]))
    trains = [run["timings"]["train-target"] for key, run in results.get("selection", {}).items()
              if key.split("/")[0] in BASELINES and "train-target" in run.get("timings", {})]
    if not trains:
        raise SystemExit("no baseline selection (ccs, grand, el2n, d2) timed train-target here: "
                         "nothing to convert seconds into target steps with")
    return statistics.median(trains) / full_steps, full_steps


def least_overhead(results: dict, method: str) -> float:
    """The method's selection seconds, the least over its runs (0 for a method with none, e.g.
    Random). With stage 1 held fixed across seeds every run does the same stage-1 work, timed
    again wherever it was computed and copied with the donor's seconds: the least-loaded timing
    is the nearest to its cost. Verification differs per seed by seconds."""
    runs = [v["overhead"] for k, v in results.get("selection", {}).items()
            if k.rsplit("/", 1)[0] == method and v.get("overhead") is not None]
    return min(runs) if runs else 0.0


def rows(results: dict, methods: list[str] | None = None) -> list[dict]:
    step_s, full_steps = target_step_seconds(results)
    groups: dict = {}
    for c in results["cells"].values():
        if (c.get("protocol", "epochs") != "epochs" or c.get("loss") is None
                or not c.get("steps") or (not c.get("rate") and c.get("method") != "full")):
            continue  # the untuned model, the steps protocol, cells recorded without steps
        if methods and c["method"] not in methods:
            continue
        groups.setdefault((c["method"], c.get("rate") or 0.0), []).append(c)
    out = []
    for (method, rate), cells in groups.items():
        selection = least_overhead(results, method) / step_s
        steps = statistics.median(c["steps"] for c in cells)
        losses = [c["loss"] for c in cells]
        out.append({"method": method, "rate": rate, "selection": selection, "steps": steps,
                     "total": selection + steps, "loss": statistics.mean(losses),
                     "sd": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                     "seeds": len(losses), "full_steps": full_steps})
    out.sort(key=lambda r: (r["total"], r["loss"]))
    for r in out:
        better = [o for o in out if o is not r and o["total"] <= r["total"]
                  and r["loss"] - o["loss"] > r["sd"] + o["sd"]]
        r["dominated_by"] = min(better, key=lambda o: o["loss"]) if better else None
    return out


def table(results: dict, methods: list[str] | None = None) -> str:
    out = rows(results, methods)
    step_s, full_steps = target_step_seconds(results)
    lines = [f"One target step = {step_s:.2f} s here (the baselines' train-target over its "
             f"{full_steps} steps); the full-data fine-tuning is {full_steps} steps.", "",
             "| method | p | selection (target steps) | fine-tuning steps | total | "
             "× full-data fine-tuning | loss (mean ± sd, seeds) | dominated by |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in out:
        d = r["dominated_by"]
        lines.append(
            f"| {r['method']} | {r['rate']:.2f} | {r['selection']:.0f} | {r['steps']:.0f} | "
            f"{r['total']:.0f} | {r['total'] / full_steps:.2f}× | {r['loss']:.3f} ± "
            f"{r['sd']:.3f} ({r['seeds']}) | "
            + (f"{d['method']} at p = {d['rate']:.2f} ({d['total']:.0f} steps, "
               f"{d['loss']:.3f})" if d else "") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a bench's results.json")
    ap.add_argument("--methods", help="comma-separated methods to show (default: every one)")
    ap.add_argument("--out", help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    try:
        results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {args.results}: {err}") from None
    text = table(results, args.methods.split(",") if args.methods else None)
    print(text, end="")
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from staff.runs.folder import write_atomic
        write_atomic(Path(args.out), text.encode("utf-8"))


if __name__ == "__main__":
    main()
