"""Markdown tables shaped like the paper's: Table 1 (fine-tuning result per method and pruning
rate; the paper prints ROUGE-L there and BLEU-4 in its appendix) and Table 2 (selection
overhead). Pure functions of the results store (``results.json``); a missing cell prints "–".
"""

from __future__ import annotations

import math

NAMES = {"random": "Random", "grand": "GraNd", "el2n": "EL2N", "ccs": "CCS", "d2": "D2 Pruning",
         "staff": "STAFF", "full": "Full data (p = 0)", "untuned": "Untuned target"}
METRICS = {"rouge_l": "ROUGE-L (F, x100)", "bleu": "BLEU-4 (sacreBLEU)"}
MISSING = "–"
ADOPTED = "†"  # a stage copied from another selection run of the bench


def cell_key(method: str, rate: float | None = None, seed: int | None = None) -> str:
    """'untuned', 'full/s0' or 'staff/p0.90/s0'."""
    if method == "untuned":
        return "untuned"
    if method == "full":
        return f"full/s{seed}"
    return f"{method}/p{rate:.2f}/s{seed}"


def mean_sd(values: list[float], digits: int = 1) -> str:
    """'12.3' for one value, '12.3 ± 0.4' (sample sd) for several, '–' for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return MISSING
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table1(results: dict, metric: str, methods: list[str], rates: list[float],
           seeds: list[int]) -> str:
    """Rows: methods (paper order), then full data and the untuned target as reference lines
    (their one value repeated in every column); columns: pruning rates."""
    cells = results.get("cells", {})
    head = ["Method"] + [f"p = {p * 100:g}%" for p in rates]
    lines = [_row(head), _row(["---"] + ["---:"] * len(rates))]
    for m in methods:
        lines.append(_row([NAMES.get(m, m)] + [
            mean_sd([cells.get(cell_key(m, p, s), {}).get(metric) for s in seeds])
            for p in rates]))
    full = mean_sd([cells.get(cell_key("full", seed=s), {}).get(metric) for s in seeds])
    untuned = mean_sd([cells.get("untuned", {}).get(metric)])
    lines.append(_row([f"*{NAMES['full']}*"] + [f"*{full}*"] * len(rates)))
    lines.append(_row([f"*{NAMES['untuned']}*"] + [f"*{untuned}*"] * len(rates)))
    return "\n".join(lines)


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
        lines.append(_row([NAMES.get(m, m), overhead, stages]))
    if adopted_any:
        lines.append(f"\n{ADOPTED} The same work as another selection run of this bench (the "
                     "small model is the target): copied from it, with the time it took there.")
    return "\n".join(lines)


def render(results: dict, methods: list[str], rates: list[float], seeds: list[int],
           title: str = "") -> str:
    """The whole markdown page: header facts, Table 1 for both metrics, Table 2."""
    cells = results.get("cells", {})
    full = [cells.get(cell_key("full", seed=s)) for s in seeds]
    n_train = next((c["n_train"] for c in full if c), None)
    n_eval = next((c.get("n_eval") for c in cells.values() if c.get("n_eval")), None)
    seed_text = ", ".join(map(str, seeds))
    parts = []
    if title:
        parts.append(f"**{title}**\n")
    parts.append(f"N = {n_train if n_train is not None else MISSING} training samples, "
                 f"{n_eval if n_eval is not None else MISSING} held-out samples; seeds {seed_text} "
                 f"(mean ± sd over seeds where there are several). Greedy decoding.\n")
    for i, (metric, name) in enumerate(METRICS.items()):
        parts.append(f"Table 1{'ab'[i]}: {name} after LoRA fine-tuning of the target on the "
                     "coreset.\n")
        parts.append(table1(results, metric, methods, rates, seeds) + "\n")
    parts.append("Table 2: selection overhead (all stages of one selection run, which serves "
                 "every pruning rate).\n")
    parts.append(table2(results, methods, seeds) + "\n")
    return "\n".join(parts)
