"""Markdown tables shaped like the paper's: Table 1 (fine-tuning result per method and pruning
rate; the paper prints ROUGE-L there and BLEU-4 in its appendix) and Table 2 (selection
overhead), and Table 3 (each coreset's whole cost in target steps beside its loss: ``cost``).
Pure functions of the results store (``results.json``); a missing cell prints "–".
"""

from __future__ import annotations

import math

from ..runs.layout import rate_dir

NAMES = {"random": "Random", "length": "Length", "grand": "GraNd", "el2n": "EL2N", "ccs": "CCS",
         "d2": "D2 Pruning", "staff": "STAFF", "full": "Full data (p = 0)",
         "untuned": "Untuned target"}
# metric key in a cell -> (title, digits, lower is better)
METRICS = {"loss": ("held-out response loss (mean token NLL; lower is better)", 3, True),
           "rouge_l": ("ROUGE-L (F, x100)", 1, False),
           "bleu": ("BLEU-4 (sacreBLEU)", 1, False),
           # Not a quality score: how long the greedy outputs run (1 = the references' length).
           # ROUGE-L follows it across cells (BENCHMARKS.md), so Table 1 shows it beside them.
           "length_ratio": ("words generated per reference word (greedy outputs; 1 = the "
                            "references' length)", 2, None)}
MISSING = "–"
ADOPTED = "†"  # a stage copied from another selection run of the bench
STAFF_LIKE = ("staff",)  # rows compared with the baselines (and their variants)


def name_of(method: str) -> str:
    """'STAFF' for 'staff', 'STAFF (draft)' for the variant 'staff:draft'."""
    base, _, variant = method.partition(":")
    return NAMES.get(base, base) + (f" ({variant})" if variant else "")


def cell_key(method: str, rate: float | None = None, seed: int | None = None,
             protocol: str = "epochs") -> str:
    """'untuned', 'full/s0', 'staff/p0.90/s0', or 'staff/p0.90/s0/steps' (the steps
    protocol)."""
    if method == "untuned":
        return "untuned"
    if method == "full":
        return f"full/s{seed}"
    key = f"{method}/{rate_dir(rate)}/s{seed}"
    return key if protocol == "epochs" else f"{key}/{protocol}"


def mean_sd(values: list[float], digits: int = 1) -> str:
    """'12.3' for one value, '12.3 ± 0.4' (sample sd) for several, '–' for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return MISSING
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n={len(values)})"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _values(results, metric, method, rate, seeds, protocol) -> list:
    cells = results.get("cells", {})
    return [cells.get(cell_key(method, rate, s, protocol), {}).get(metric) for s in seeds]


def protocols_present(results: dict) -> list[str]:
    found = {e.get("protocol", "epochs") for e in results.get("cells", {}).values()}
    return [p for p in ("epochs", "steps") if p in found] or ["epochs"]


def table1(results: dict, metric: str, methods: list[str], rates: list[float],
           seeds: list[int], protocol: str = "epochs") -> str:
    """Rows: methods (paper order), then full data and the untuned target as reference lines
    (their one value repeated in every column); columns: pruning rates."""
    cells = results.get("cells", {})
    digits = METRICS[metric][1]
    head = ["Method"] + [f"p = {p * 100:g}%" for p in rates]
    lines = [_row(head), _row(["---"] + ["---:"] * len(rates))]
    for m in methods:
        values = [_values(results, metric, m, p, seeds, protocol) for p in rates]
        if protocol != "epochs" and not any(v is not None for vs in values for v in vs):
            continue  # the steps protocol covers a few methods only
        lines.append(_row([name_of(m)] + [mean_sd(v, digits) for v in values]))
    full = mean_sd([cells.get(cell_key("full", seed=s), {}).get(metric) for s in seeds], digits)
    untuned = mean_sd([cells.get("untuned", {}).get(metric)], digits)
    lines.append(_row([f"*{NAMES['full']}*"] + [f"*{full}*"] * len(rates)))
    lines.append(_row([f"*{NAMES['untuned']}*"] + [f"*{untuned}*"] * len(rates)))
    return "\n".join(lines)


def per_seed(results: dict, metric: str, method: str, rate: float, seeds: list[int],
             protocol: str = "epochs") -> dict:
    """{seed: per-example values} of one (method, rate) for the seeds that have them."""
    per = results.get("per_example", {})
    out = {}
    for s in seeds:
        values = per.get(cell_key(method, rate, s, protocol), {}).get(metric)
        if values:
            out[s] = values
    return out


def best_baseline(results: dict, metric: str, methods: list[str], rate: float,
                  seeds: list[int], protocol: str = "epochs") -> str | None:
    """The baseline (not STAFF or a STAFF variant, not Random) with the best mean."""
    lower = METRICS[metric][2]
    best, best_value = None, None
    for m in methods:
        if m.split(":")[0] in STAFF_LIKE or m == "random":
            continue
        values = [v for v in _values(results, metric, m, rate, seeds, protocol) if v is not None]
        if not values:
            continue
        mean = sum(values) / len(values)
        if best_value is None or (mean < best_value if lower else mean > best_value):
            best, best_value = m, mean
    return best


def difference_table(results: dict, metric: str, methods: list[str], rates: list[float],
                     seeds: list[int], protocol: str = "epochs", against: str = "random",
                     n_boot: int = 10_000) -> str:
    """Each method minus ``against`` ('random'; 'best' for the best baseline of each rate;
    'staff' for STAFF's variants against the paper's rule): the mean paired difference and its
    95% bootstrap interval over test examples and seeds. '*' marks an interval that excludes 0."""
    from .stats import paired_bootstrap

    digits = METRICS[metric][1] + (1 if metric == "loss" else 0)
    head = ["Method"] + [f"p = {p * 100:g}%" for p in rates]
    lines = [_row(head), _row(["---"] + ["---:"] * len(rates))]
    refs = {p: against if against != "best" else best_baseline(results, metric, methods, p,
                                                                 seeds, protocol)
            for p in rates}
    if against == "best":
        lines.append(_row(["*best baseline*"] + [name_of(refs[p]) if refs[p] else MISSING
                                                 for p in rates]))
    any_row = False
    for m in methods:
        if against == "best" and m.split(":")[0] not in STAFF_LIKE:
            continue
        if against == "staff" and not m.startswith("staff:"):
            continue  # issue 15's rule: a variant replaces the paper's only if it beats it
        row, seen = [name_of(m)], False
        for p in rates:
            ref = refs[p]
            diff = None
            if ref and ref != m:
                diff = paired_bootstrap(per_seed(results, metric, m, p, seeds, protocol),
                                        per_seed(results, metric, ref, p, seeds, protocol),
                                        n_boot=n_boot)
            if diff is None:
                row.append(MISSING)
                continue
            seen = True
            mark = " *" if diff.excludes_zero else ""
            row.append(f"{diff.mean:+.{digits}f} [{diff.low:+.{digits}f}, "
                       f"{diff.high:+.{digits}f}]{mark} ({diff.seeds}s)")
        if seen:
            lines.append(_row(row))
            any_row = True
    return "\n".join(lines) if any_row else ""


def table2(results: dict, methods: list[str], seeds: list[int]) -> str:
    """Selection overhead per method (seconds; mean ± sd over seeds) and its stages."""
    sel = results.get("selection", {})
    lines = [_row(["Method", "Selection overhead (s)", "Stages (s, first seed)"]),
             _row(["---", "---:", "---"])]
    adopted_any = False
    for m in methods:
        runs = [sel.get(f"{m}/s{s}") for s in seeds]
        overhead = mean_sd([r["overhead"] for r in runs if r])
        first = next((r for r in runs if r), None)
        stages = MISSING
        if first:
            adopted = set(first.get("adopted", ()))
            adopted_any |= bool(adopted)
            stages = ", ".join(f"{k} {v:.1f}{ADOPTED if k in adopted else ''}"
                               for k, v in first["timings"].items())
        lines.append(_row([name_of(m), overhead, stages]))
    if adopted_any:
        lines.append(f"\n{ADOPTED} The same work as another selection run of this bench (the "
                     "same model and inputs, e.g. the small model is the target, or stage 1 "
                     "held fixed across seeds): copied from it, with the time it took there.")
    return "\n".join(lines)


def render(results: dict, methods: list[str], rates: list[float], seeds: list[int],
           title: str = "", stage1_seed: int | None = None, n_boot: int = 10_000,
           n_train: int | None = None) -> str:
    """The whole markdown page: header facts, Table 1 per metric and protocol, the paired
    differences to Random and to the best baseline, Table 2, and Table 3 (the cost at equal
    compute, where a baseline timed train-target). ``n_train`` is N where no
    full-data cell names it (cells_csv.full_size)."""
    cells = results.get("cells", {})
    full = [cells.get(cell_key("full", seed=s)) for s in seeds]
    n_train = next((c["n_train"] for c in full if c), n_train)
    n_eval = next((c.get("n_eval") for c in cells.values() if c.get("n_eval")), None)
    n_loss = next((c.get("n_loss") for c in cells.values() if c.get("n_loss")), None)
    seed_text = ", ".join(map(str, seeds))
    parts = []
    if title:
        parts.append(f"**{title}**\n")
    parts.append(f"N = {n_train if n_train is not None else MISSING} training samples; "
                 f"held-out loss on {n_loss if n_loss is not None else MISSING} examples, "
                 f"greedy decoding on {n_eval if n_eval is not None else MISSING}; seeds "
                 f"{seed_text} (mean ± sd over the seeds a cell has, n = how many). "
                 + ("Stage 1 of every selection (fine-tuning and scoring the full data) is "
                    f"held fixed at seed {stage1_seed}: seeds vary the draws and the "
                    "fine-tuning on the coreset.\n" if stage1_seed is not None else
                    "Each seed runs its own stage 1.\n"))
    protocols = protocols_present(results)
    for protocol in protocols:
        what = ("the recipe's epochs over the coreset" if protocol == "epochs" else
                "as many optimiser steps as the full-data cell, cycling over the coreset")
        for metric, (name, _, _) in METRICS.items():
            if not any(e.get(metric) is not None and e.get("protocol", "epochs") == protocol
                       for e in cells.values()):
                continue
            parts.append(f"Table 1 ({protocol} protocol: {what}): {name} after LoRA "
                         "fine-tuning of the target on the coreset.\n")
            parts.append(table1(results, metric, methods, rates, seeds, protocol) + "\n")
    for protocol in protocols:
        for metric in ("loss", "rouge_l"):
            for against, label in (("random", "Random"), ("best", "the best baseline"),
                                   ("staff", "STAFF (the paper's rule)")):
                table = difference_table(results, metric, methods, rates, seeds, protocol,
                                         against, n_boot)
                if table:
                    parts.append(f"Difference to {label} ({protocol} protocol), "
                                 f"{METRICS[metric][0]}: method − {label}, mean over the "
                                 "common seeds and test examples [95% paired bootstrap "
                                 "interval over both]; * the interval excludes 0; (Ns) the "
                                 "seeds it rests on."
                                 + (" Negative is better for the loss." if metric == "loss"
                                    else "") + "\n")
                    parts.append(table + "\n")
    parts.append("Table 2: selection overhead (all stages of one selection run, which serves "
                 "every pruning rate).\n")
    parts.append(table2(results, methods, seeds) + "\n")
    from .cost import CostError, cost_table
    try:
        cost = cost_table(results, methods + ["full"])
    except CostError:
        cost = ""  # no baseline timed train-target here: no rate to convert seconds with
    if cost:
        parts.append("Table 3: the whole cost of each coreset in optimiser steps of the "
                     "target's fine-tuning (selection overhead at this bench's seconds per "
                     "target step, plus the coreset's own steps: the bench's epochs over it, "
                     "or the full data's steps for a row marked (steps)), beside its loss and "
                     "ROUGE-L: a row is dominated when one that costs no more has a lower loss "
                     "by more than both rows' seed sd.\n")
        parts.append(cost)
    return "\n".join(parts)
