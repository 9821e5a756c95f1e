"""What a coreset costs end to end against what it buys, in one currency: optimiser steps of
the target's fine-tuning (BENCHMARKS.md, "At equal compute").

For every (method, pruning rate, protocol): the selection's overhead
(train-small + score + verify for STAFF, train-target + score-target for the baselines, ~0 for
Random and Length) converted into target steps at the bench's own rate, the baselines'
train-target seconds over its steps (the same model, recipe and batch size as a cell's
fine-tuning, timed in the same bench), plus the cell's own fine-tuning steps; beside it the
held-out loss, mean ± sd over seeds. A `steps`-protocol cell trains as many steps as the
full data; it is a row of its own, named so. The full-data cell, where the bench has one, is a
row too (p = 0). Rows are sorted by that total. A row is *dominated* when a row that costs no
more has a lower mean loss by more than both rows' seed sd together: the extra compute bought nothing a
cheaper choice does not give.

Seconds on shared cores vary between sessions, and a selection that took a stage from another
run carries that run's seconds: each method's overhead is the least over its selection runs
(the same stage-1 work, timed wherever it ran).
"""

from __future__ import annotations

import statistics

BASELINES = ("ccs", "grand", "el2n", "d2")   # whose overhead is train-target + score-target


class CostError(ValueError):
    """The results cannot be put in target steps (the message says what is missing)."""


def target_step_seconds(results: dict) -> tuple[float, int]:
    """(seconds per target optimiser step, full-data steps) from the baselines' train-target,
    whose step count is the full data's: a cell at rate p trains (1 - p) of it."""
    cells = [c for c in results.get("cells", {}).values()
             if c.get("protocol", "epochs") == "epochs" and c.get("rate") and c.get("steps")]
    if not cells:
        raise CostError("no coreset cells with a step count")
    full = [c["steps"] for c in results.get("cells", {}).values()
            if c.get("method") == "full" and c.get("steps")]
    # Without a full-data cell: the largest coreset's steps scaled to all N (steps are whole
    # batches, so this is within a batch per epoch of the full data's count).
    largest = min(cells, key=lambda c: c["rate"])
    full_steps = full[0] if full else round(largest["steps"] / (1 - largest["rate"]))
    trains = [run["timings"]["train-target"] for key, run in results.get("selection", {}).items()
              if key.split("/")[0] in BASELINES and "train-target" in run.get("timings", {})]
    if not trains:
        raise CostError("no baseline selection (ccs, grand, el2n, d2) timed train-target: "
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


def cost_rows(results: dict, methods: list[str] | None = None) -> list[dict]:
    step_s, full_steps = target_step_seconds(results)
    groups: dict = {}
    for c in results["cells"].values():
        if (c.get("loss") is None or not c.get("steps")
                or (not c.get("rate") and c.get("method") != "full")):
            continue  # the untuned model, cells recorded without steps
        if methods and c["method"] not in methods:
            continue
        key = (c["method"], c.get("rate") or 0.0, c.get("protocol", "epochs"))
        groups.setdefault(key, []).append(c)
    out = []
    for (method, rate, protocol), cells in groups.items():
        selection = least_overhead(results, method) / step_s
        steps = statistics.median(c["steps"] for c in cells)
        losses = [c["loss"] for c in cells]
        # ROUGE-L beside the loss: where the two disagree (the steps protocol overfits its
        # coreset: a worse token NLL with better outputs), the table shows it.
        rouge = [c["rouge_l"] for c in cells if c.get("rouge_l") is not None]
        out.append({"method": method, "rate": rate, "protocol": protocol,
                    "selection": selection, "steps": steps,
                    "total": selection + steps, "loss": statistics.mean(losses),
                    "sd": statistics.stdev(losses) if len(losses) > 1 else 0.0,
                    "seeds": len(losses), "full_steps": full_steps,
                    "rouge_l": statistics.mean(rouge) if rouge else None,
                    "rouge_seeds": len(rouge)})
    out.sort(key=lambda r: (r["total"], r["loss"]))
    for r in out:
        better = [o for o in out if o is not r and o["total"] <= r["total"]
                  and r["loss"] - o["loss"] > r["sd"] + o["sd"]]
        r["dominated_by"] = min(better, key=lambda o: o["loss"]) if better else None
    return out


def cost_table(results: dict, methods: list[str] | None = None) -> str:
    """The markdown table (raises CostError when the results cannot give it)."""
    out = cost_rows(results, methods)
    step_s, full_steps = target_step_seconds(results)
    lines = [f"One target step = {step_s:.2f} s here (the baselines' train-target over its "
             f"{full_steps} steps); the full-data fine-tuning is {full_steps} steps.", "",
             "| Method | p | selection (target steps) | fine-tuning steps | total | "
             "× full-data fine-tuning | loss (mean ± sd, seeds) | ROUGE-L (mean, seeds) | "
             "dominated by (loss) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in out:
        d = r["dominated_by"]
        lines.append(
            f"| {_label(r)} | {r['rate']:.2f} | {r['selection']:.0f} | "
            f"{r['steps']:.0f} | {r['total']:.0f} | {r['total'] / full_steps:.2f}× | "
            f"{r['loss']:.3f} ± {r['sd']:.3f} ({r['seeds']}) | "
            + (f"{r['rouge_l']:.1f} ({r['rouge_seeds']})" if r["rouge_l"] is not None else "–")
            + " | "
            + (f"{_label(d)} at p = {d['rate']:.2f} ({d['total']:.0f} steps, "
               f"{d['loss']:.3f})" if d else "") + " |")
    return "\n".join(lines) + "\n"


def _label(row: dict) -> str:
    from .tables import name_of

    name = name_of(row["method"])
    return name if row.get("protocol", "epochs") == "epochs" else f"{name} ({row['protocol']})"
