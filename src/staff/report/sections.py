"""The sections of the report page, one function each: the run folder's numbers, figures and
tables for a reader, each with a line on how to read it. ``html.build_report`` chooses and
orders them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..runs import layout as L
from . import figures
from .markup import _e, _img, _num, _read, _table
from .numbers import (DECILES, FLAG_FIELD, LOW_RHO, agreement, composition, decile_composition,
                      flagged_counts, hardest_samples, low_agreement_note, region_edges,
                      response_lengths)
from .read import Rate, Run


METHODS = {  # what a baseline's report says it did (README, "Baselines and ablations")
    "random": "a uniform random draw of m samples (no model)",
    "length": "the m samples with the most response tokens, as the target's tokenizer counts "
              "them (no model)",
    "grand": "the m samples with the highest gradient norm on the fine-tuned target (GraNd)",
    "el2n": "the m samples with the highest EL2N on the fine-tuned target",
    "ccs": "CCS: equal-width strata over EL2N on the fine-tuned target, visited smallest "
           "first, each drawn at random",
    "d2": "D2 Pruning: message passing on a kNN graph over the fine-tuned target's embeddings",
}


def _overview(run: Run) -> str:
    where = L.selections_dir(Path("."), run.method).as_posix()
    rows = [{"pruning rate": f"{r.pruning_rate:.2f}", "coreset m": r.m, "of N": r.n,
             "selected ids": len(r.ids), "coreset file": f"{where}/{r.name}/{L.CORESET}"}
            for r in run.rates]
    stale = [r for r in run.rates if not r.current]
    note = ""
    if stale:  # kept on disk by `staff pick -p` with other scores or options: say so
        for row, r in zip(rows, run.rates):
            row["picked"] = "now" if r.current else "earlier, other options"
        note = (f'<p class="note">{len(stale)} coreset(s) on disk come from an earlier pick '
                "with other scores or options than this run's; they are listed, but the "
                "figures below describe them with today's scores. Pick them again (`staff "
                "pick -p ...`) or delete their folders.</p>")
    return _table(pd.DataFrame(rows)) + note


def header(run: Run) -> str:
    c, s = run.cfg, run.cfg.selection
    n = run.rates[0].n if run.rates else len(run.scores)
    if run.method != "staff":
        return (f"<h1>{_e(run.method)} selection report</h1>"
                f'<p class="meta">Run folder <code>{_e(run.path.resolve())}</code> · written '
                f"{time.strftime('%Y-%m-%d %H:%M')}</p>"
                f"<p>{n} samples from <code>{_e(c.data.path)}</code>. Method "
                f"<code>{_e(run.method)}</code>: {_e(METHODS.get(run.method, ''))}. Seed "
                f"{c.seed}.</p>" + _overview(run))
    return (f"<h1>STAFF selection report</h1>"
            f'<p class="meta">Run folder <code>{_e(run.path.resolve())}</code> · written '
            f"{time.strftime('%Y-%m-%d %H:%M')}</p>"
            f"<p>{n} samples from <code>{_e(c.data.path)}</code>. Small model "
            f"<code>{_e(c.small.name)}</code> (fine-tuned, speculative scores) → target "
            f"<code>{_e(c.target.name)}</code> (verification). K = {s.regions} regions, "
            f"b_v = {s.verify_per_region} verified per region, {len(run.verification)} "
            f"samples scored on the target. Normalisation <code>{_e(s.normalize)}</code>, "
            f"budget rule <code>{_e(s.budget_rule)}</code>, draw <code>{_e(s.within_region)}"
            f"</code>, hard prune {s.hard_prune:g}, seed {c.seed}.</p>" + _overview(run))


def scores_section(run: Run) -> str:
    k = run.cfg.selection.regions
    edges = region_edges(run.rates[0].regions, k)
    effort = run.scores["effort"].to_numpy(float)
    tol = 1e-9 * max(1.0, abs(edges[-1]))
    pruned = (effort > edges[-1] + tol) | (effort < edges[0] - tol)
    png = figures.score_histogram(effort, edges, pruned)
    return ("<h2>1. Speculative scores</h2>" + _img(png, "histogram of speculative scores")
            + _read("how many samples have each effort score on the fine-tuned small model "
                    "(higher = the model works harder to fit the sample). The dashed lines are "
                    "the edges of the K equal-width regions STAFF draws from; a crowded region "
                    "holds many similar samples, so a random draw from it thins out redundancy."))


def _zero_region_note(rate: Rate) -> str:
    """Why a crowded region with a high V_i can get nothing (Eq. 4), in place: regions are
    visited fewest samples first, and each visit takes m_B = floor((m - |D'|) V_i / |B|) of
    what is left, so the densest region comes last and finds the budget spent."""
    t = rate.regions.reset_index(drop=True)  # regions.csv is in visit order
    empty = t[(t["selected"] == 0) & (t["size"] > 0)]
    if empty.empty:
        return ""
    densest = t["size"].idxmax()
    notes = []
    for i, row in empty.iterrows():
        before = int(np.minimum(t["budget"][:i], t["size"][:i]).sum())
        what = []
        if i == densest:
            what.append("the densest region")
        if row["factor"] >= t["factor"].max():
            what.append(f"the highest V_i ({_num(row['factor'])})")
        label = f" ({' and '.join(what)})" if what else ""
        notes.append(f"region {int(row['region'])}{label}, {int(row['size'])} samples, visited "
                     f"{i + 1} of {len(t)}: the regions before it took {before} of m = "
                     f"{rate.m}")
    return ('<p class="note">0 samples from ' + _e("; ".join(notes)) + ". STAFF's Eq. 4 "
            "visits regions in order of size, fewest samples first, and gives each "
            "m_B = ⌊(m − |D'|) · V_i / |B|⌋ of the budget still left (|B| = regions not yet "
            "visited), so a region visited late can find it spent whatever its V_i. That is the "
            "paper's rule (it favours sparse regions, where redundancy is low); "
            "<code>selection.budget_rule: share</code> divides by the sum of V over the "
            "unvisited regions instead.</p>")


def regions_section(run: Run) -> str:
    parts = ["<h2>2. Regions: verification and budgets</h2>",
             _read("one chart per pruning rate (the paper's Figure 3 b). Grey: samples in the "
                   "region; blue: its budget m_B; orange: samples selected from it; green dots "
                   "(right axis): V_i = target score / small score on its verified samples. "
                   "V_i above the dotted line at 1 means the target finds the region more "
                   "important than the small model did, so it gets a larger budget.")]
    for rate in run.rates:
        title = f"p = {rate.pruning_rate:.2f}: {rate.m} of {rate.n} samples kept"
        edges = region_edges(rate.regions, run.cfg.selection.regions)
        parts.append(f"<h3>{_e(title)}</h3>" + _img(figures.region_chart(rate.regions, edges),
                                                    f"regions at {title}"))
        table = rate.regions.copy()
        table.insert(0, "visit", np.arange(1, len(table) + 1))  # regions.csv is in visit order
        table = table.sort_values("region").rename(columns={"factor": "V_i"})
        fmt = {"lo": _num, "hi": _num, "V_i": _num}
        opened = " open" if len(table) <= 15 else ""
        parts.append(_zero_region_note(rate))
        parts.append(f"<details{opened}><summary>Region table, {len(table)} non-empty regions "
                     f"(visit = the order STAFF visited them: fewest samples first)</summary>"
                     f"{_table(table, fmt)}</details>")
    return "".join(parts)


def agreement_section(run: Run) -> str:
    k = run.cfg.selection.regions
    v = run.verification
    head = "<h2>3. Small vs target model on the verified samples</h2>"
    if len(v) < 2:
        return head + '<p class="note">Fewer than two verified samples: nothing to compare.</p>'
    rho, p_value, ri, ari = agreement(v, k)
    png = figures.agreement_chart(v["small_effort"], v["target_effort"], v["region"], rho, ri)
    stats = (f"<table><tr><th>verified samples</th><td>{len(v)}</td></tr>"
             f"<tr><th>Spearman's ρ (small vs target effort)</th>"
             f'<td id="spearman-rho">{figures._fmt(rho)}</td></tr>'
             f"<tr><th>p-value of ρ</th><td>{p_value:.2g}</td></tr>"
             f"<tr><th>Rand index of the K = {k} regions each model induces</th>"
             f'<td id="rand-index">{figures._fmt(ri)}</td></tr>'
             f"<tr><th>adjusted Rand index (0 = chance)</th>"
             f'<td id="adjusted-rand-index">{figures._fmt(ari)}</td></tr></table>')
    low = (f'<p class="note">{_e(low_agreement_note(rho))}</p>'
           if np.isnan(rho) or rho < LOW_RHO else "")
    return (head + low + _img(png, "small vs target scores") + _read(
        "each dot is one verified sample: its effort on the small model (x) and on the target "
        "(y), coloured by its region. ρ near 1: the two models rank samples alike, so the "
        "small model's scores can stand in for the target's. The Rand index splits each "
        "model's scores into K equal-width regions and counts the sample pairs both put in "
        "the same or both in different regions (1 = identical partitions; the paper's Table 18 "
        "reports 0.92–0.94 for same-family pairs). It is high by chance, since most pairs fall "
        "in different regions under any scoring; the adjusted index removes that (0 = no better "
        "than chance). Right: both scores over their own mean, "
        "samples in small-model order: in a good pair the two curves rise together.") + stats)


def decile_section(run: Run) -> str:
    table = decile_composition(run)
    if table is None:
        return ""
    rates = [f"p = {r.pruning_rate:.2f}" for r in run.rates]
    outside = {name: int(sum((v < lo - 1e-12) or (v > hi + 1e-12) for v, lo, hi in zip(
        table[name], *table.attrs[name]))) for name in rates}
    verdict = "; ".join(f"{name}: {n} of {DECILES} deciles outside a random draw's 95% range"
                        for name, n in outside.items())
    shown = table.drop(columns=[c for c in table.columns if c.endswith("random 95%")])
    fmt = {"lo": _num, "hi": _num, **{name: (lambda v: f"{100 * v:.1f} %") for name in rates}}
    return ('<h2 id="decile-composition">Coreset vs a random draw, by score decile</h2>'
            + _img(figures.decile_chart(table, rates), "coreset share per score decile")
            + _read("the full data split into ten equal-count deciles of the speculative score "
                    "(1 = lowest), and the share of each coreset that falls in each. A uniform "
                    "random draw of the same size puts about 10% in every decile; the grey band "
                    "is where 95% of such draws land. Bars inside the band: by this score the "
                    "coreset is what a random draw would have been, and STAFF's regions and "
                    "budgets changed little on these data. " + _e(verdict) + ".")
            + _table(table, fmt))


def length_section(run: Run) -> str:
    table = response_lengths(run)
    if table is None:
        return ""
    low, high = zip(*table["random draw's 95% range"])
    below = [p for p, v, lo in zip(table["pruning rate"], table["mean response tokens"], low)
             if v < lo]
    above = [p for p, v, hi in zip(table["pruning rate"], table["mean response tokens"], high)
             if v > hi]
    verdict = " ".join(
        f"At p = {', '.join(ps)} the coreset's responses are {word} than a random draw's."
        for ps, word in ((below, "shorter"), (above, "longer")) if ps) \
        or "Every coreset's mean is inside a random draw's range."
    fmt = {"mean response tokens": lambda v: f"{v:.1f}", "full data's": lambda v: f"{v:.1f}",
           "ratio": lambda v: f"{v:.2f}×",
           "random draw's 95% range": lambda r: f"{r[0]:.1f}–{r[1]:.1f}"}
    return ('<h2 id="response-length">Response length of the coresets</h2>'
            + _read("the mean number of response tokens in each coreset beside the full "
                    "data's, and where 95% of uniform random draws of the same size would put "
                    "it. Effort is a mean over response tokens, so it favours short responses "
                    "(BENCHMARKS.md measured Spearman ρ of −0.4 to −0.6 on two tasks), and a "
                    "model fine-tuned on shorter responses tends to answer shorter: on "
                    "Multi30k that alone moved ROUGE-L by points. " + _e(verdict))
            + _table(table, fmt))


def hardest_section(run: Run) -> str:
    table = hardest_samples(run)
    if table is None:
        return ""
    shares = "; ".join(f"{name}: {100 * v:.0f}%" for name, v in table.attrs["top_share"].items())
    fmt = {"effort": lambda v: f"{v:.3g}", "loss": lambda v: f"{v:.2f}"}
    return ('<h2 id="hardest-samples">The highest-effort samples</h2>'
            + _read("the samples the small model found hardest to fit, highest first, and "
                    "whether each coreset kept them. Share of each coreset taken from the top "
                    f"tenth of the scores ({table.attrs['top_n']} samples; a random draw takes "
                    f"about 10%): {_e(shares)}. Algorithm 1 gives every region about the same "
                    "budget, so the thin top regions are over-drawn. Read these rows: if they "
                    "are noise (wrong, loose or truncated references) rather than hard but "
                    "right, <code>selection.hard_prune: 0.1</code> drops the top tenth before "
                    "the regions are cut. Measured (BENCHMARKS.md): on Multi30k at p = 0.9 "
                    "and 0.95 that lowered the fine-tuned target's held-out loss by about 0.02 "
                    "against both the paper's rule and a random draw, and with a cheap "
                    "<code>staff draft</code> small model it turned coresets worse than a "
                    "random draw into better ones; on DialogSum, whose hardest samples are "
                    "its shortest summaries, it did not help.")
            + _table(table, fmt))


def composition_section(run: Run) -> str:
    name, shares, note = composition(run)
    if shares is None:
        return ('<h2>4. Composition of the coreset</h2><p class="note">Skipped: '
                f"{_e(note)}</p>")
    table = shares.rename_axis(name).reset_index()
    pct = {c: (lambda v: f"{100 * v:.1f} %") for c in shares.columns}
    gone = [f"{value} ({', '.join(c for c in shares.columns[1:] if shares.at[value, c] == 0)})"
            for value in shares.index if (shares.loc[value].iloc[1:] == 0).any()]
    if gone:
        note = " ".join([note, "Values missing from a coreset: " + "; ".join(gone) + "."]).strip()
    warn = f'<p class="note">{_e(note)}</p>' if note else ""
    return (f"<h2>4. Composition of the coreset by <code>{_e(name)}</code></h2>" + warn
            + _img(figures.composition_chart(shares, name), f"composition by {name}")
            + _read(f"the share of each value of <code>{_e(name)}</code> in the full data (grey) "
                    "and in each coreset. A bar above the grey one: the selection favours that "
                    "value (often a harder one); far below or absent: the coreset barely "
                    "covers it, which a model fine-tuned on it may show.") + _table(table, pct))


def flagged_section(run: Run) -> str:
    table = flagged_counts(run)
    if table is None:
        return ""
    return ("<h2>Flagged rows kept</h2>" + _read(
        f"rows the data marks in its field <code>{FLAG_FIELD}</code> (the demo plants "
        "duplicates and wrong answers), counted in each coreset beside what a uniform random "
        "draw of the same size keeps on average. Fewer than random: the selection avoids them; "
        "more: it favours them (a wrong answer is hard to fit, so a gradient-norm score can "
        "rate it highly). Shown as it is, not as a goal the method promises.") + _table(table))


def timings_section(run: Run) -> str:
    head = "<h2>5. Wall time of each stage</h2>"
    if not run.timings:
        return head + '<p class="note">No timings.json or state.json in the run folder.</p>'
    total = sum(run.timings.values())
    table = pd.DataFrame([{"stage": s, "seconds": f"{t:.1f}",
                           "share": f"{100 * t / total:.0f} %" if total else "-"}
                          for s, t in run.timings.items()])
    table.loc[len(table)] = {"stage": "total (selection overhead)", "seconds": f"{total:.1f}",
                             "share": "100 %"}
    return (head + _img(figures.timings_chart(run.timings), "stage wall times")
            + _read("seconds each stage took in the run that produced this folder (a stage "
                    "skipped on a re-run keeps its first time). "
                    + ("train-small and score touch every sample on the small model; verify is "
                       "the only stage that runs the target, on K·b_v samples at most. Stage 1 "
                       "fine-tunes on all N samples, the coreset's fine-tuning on (1 − p)·N: in "
                       "every bench of BENCHMARKS.md (\"At equal compute\") choosing a p = 0.9 "
                       "coreset cost more than fine-tuning the target on it, so a coreset pays "
                       "when it is fine-tuned on more than once."
                       if run.method == "staff" else
                       "train-target and score-target fine-tune the target and score every "
                       "sample on it (shared by the baselines run in one folder)."
                       if run.method not in ("random", "length") else
                       "this method needs no model."))
            + _table(table))


def benchmark_section(results: list[dict]) -> str:
    """Hook for benchmark runs (the paper's Tables 1/2): score vs pruning rate per method."""
    table = pd.DataFrame(results)
    return ("<h2>6. Benchmark: fine-tuned target vs pruning rate</h2>"
            + _img(figures.plot_benchmark(results), "benchmark")
            + _read("ROUGE-L / BLEU-4 of the target fine-tuned on each method's coreset, on the "
                    "held-out split; higher is better. The gap between methods usually widens "
                    "at high pruning rates.") + _table(table))
