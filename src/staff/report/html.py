"""A run folder -> ``report.html``: one self-contained page (figures embedded as base64 PNG).

Reads files only: config.yaml, scores.csv, verification.csv, timings.json (or state.json),
selections/summary.json and selections/p*/{ids.txt, regions.csv}; for the composition section
also the run's data, through ``staff.data`` (which reads files, never a model).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..runs import layout as L
from ..runs.folder import read_table, write_atomic
from . import figures

log = logging.getLogger(__name__)

STAGE_ORDER = ("train-small", "score", "verify", "pick")
MAX_VALUES = 12  # composition: the most frequent values, the rest as "other"


class ReportError(ValueError):
    """The folder is not a finished run, or one of its files is unreadable; names the file."""


@dataclass
class Rate:
    name: str            # "p0.50"
    pruning_rate: float
    n: int
    m: int
    ids: list[str]
    regions: pd.DataFrame | None   # STAFF's region table; None for other methods
    current: bool = True           # False: left by an earlier pick with other scores/options


@dataclass
class Run:
    path: Path
    cfg: object          # staff.config.RunConfig
    scores: pd.DataFrame
    verification: pd.DataFrame
    rates: list[Rate]
    timings: dict[str, float] = field(default_factory=dict)
    method: str = "staff"


# ----------------------------------------------------------------------------- reading

def _csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise ReportError(f"{path} is missing: not a finished run folder.")
    try:
        frame = read_table(path)
    except (ValueError, OSError) as err:
        raise ReportError(f"{path}: cannot read it ({str(err).strip().splitlines()[0]}).")
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ReportError(f"{path}: no column '{missing[0]}' (has {', '.join(frame)}).")
    return frame


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ReportError(f"{path}: cannot read it ({err}).")


def read_run(run_dir: str | Path, method: str | None = None) -> Run:
    """Everything the report on ``method``'s coresets shows (default: STAFF's, else the
    folder's only method), from the run folder's files."""
    from ..config import config_from_dict
    from ..runs.result import methods_in

    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder.")
    if method is None:
        method = (methods_in(path) or ["staff"])[0]
    summary_path = L.selections_dir(path, method) / L.SUMMARY
    if not (path / L.CONFIG).is_file() or not summary_path.is_file():
        raise ReportError(f"{path} is not a finished run folder: it has no config.yaml or no "
                          f"{summary_path.relative_to(path)} (run `staff select` first).")
    try:
        cfg = config_from_dict(yaml.safe_load((path / L.CONFIG).read_text("utf-8")) or {})
    except yaml.YAMLError as err:
        raise ReportError(f"{path / L.CONFIG}: not valid YAML ({err}).")
    if method == "staff":
        scores = _csv(path / L.SCORES, ("id", "effort"))
        verification = _csv(path / L.VERIFICATION, ("id", "region"))
    else:  # the baselines' scores are the fine-tuned target's; random has none
        name = L.scores_file(method)
        scores = (_csv(path / name, ("id",)) if name and (path / name).is_file()
                  else pd.DataFrame(columns=["id"]))
        verification = pd.DataFrame(columns=["id", "region", "small_effort", "target_effort"])
    # Columns are small_<score> / target_<score>: effort by default, el2n or loss when the
    # run used another speculative score (selection.score).
    pair = [c for c in verification.columns if c.startswith(("small_", "target_"))]
    if len(pair) == 2 and "small_effort" not in verification.columns:
        verification = verification.rename(columns={pair[0]: "small_effort",
                                                    pair[1]: "target_effort"})
    rates = []
    for name, info in sorted(_json(summary_path).items(), key=lambda kv: kv[1]["pruning_rate"]):
        folder = summary_path.parent / name
        ids_path = folder / L.IDS
        if not ids_path.is_file():
            raise ReportError(f"{ids_path} is missing: not a finished run folder.")
        ids = ids_path.read_text(encoding="utf-8").splitlines()
        regions = (_csv(folder / L.REGIONS, ("region", "lo", "hi", "size", "verified",
                                                 "factor", "budget", "selected"))
                   if method == "staff" else None)
        rates.append(Rate(name, float(info["pruning_rate"]), int(info["n"]), int(info["m"]),
                          ids, regions, bool(info.get("current", True))))
    return Run(path, cfg, scores, verification, rates, _timings(path, method), method)


def _timings(path: Path, method: str = "staff") -> dict[str, float]:
    """timings.json, else the seconds recorded in state.json; stages in run order; only the
    stages ``method`` runs (a folder shared by several methods records them all)."""
    if (path / L.TIMINGS).is_file():
        raw = _json(path / L.TIMINGS)
    elif (path / L.STATE).is_file():
        raw = {k: v.get("seconds", 0.0) for k, v in _json(path / L.STATE)["stages"].items()}
    else:
        return {}
    if method in ("random", "length"):
        raw = {s: t for s, t in raw.items() if s == "pick"}
    elif method != "staff":
        raw = {s: t for s, t in raw.items() if s in L.TARGET_STAGES}
    else:
        raw = {s: t for s, t in raw.items() if s not in L.TARGET_STAGES or s == "pick"}
    order = [s for s in STAGE_ORDER if s in raw] + [s for s in raw if s not in STAGE_ORDER]
    return {s: float(raw[s]) for s in order}


# ----------------------------------------------------------------------------- numbers

def region_labels(scores: np.ndarray, k: int) -> np.ndarray:
    """K equal-width regions over [min, max] of ``scores`` (as ``make_regions`` draws them)."""
    from ..selection.staff import make_regions

    return make_regions(np.asarray(scores, dtype=float), k).of


def agreement(verification: pd.DataFrame, k: int) -> tuple[float, float, float, float]:
    """(Spearman's ρ, its p-value, Rand index, adjusted Rand index) between small and target
    scores on the verified samples; the Rand indices compare the K regions each model's own
    scores induce (the paper's Table 18 reports the plain one). NaN where fewer than 2 samples
    (or a constant score) allow none.

    The plain Rand index is high by chance: with K equal-width regions most pairs of samples
    fall in different regions under any two scorings (0.925 for shuffled scores on Multi30k,
    BENCHMARKS.md). The adjusted index subtracts what chance gives (0 = chance, 1 = the same
    partition), so it is shown beside it."""
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score, rand_score

    small = verification["small_effort"].to_numpy(float)
    target = verification["target_effort"].to_numpy(float)
    if len(small) < 2:
        return (float("nan"),) * 4
    if np.ptp(small) > 0 and np.ptp(target) > 0:
        result = spearmanr(small, target)
        rho, p_value = float(result.statistic), float(result.pvalue)
    else:
        rho, p_value = float("nan"), float("nan")
    small_regions, target_regions = region_labels(small, k), region_labels(target, k)
    ri = float(rand_score(small_regions, target_regions))
    ari = float(adjusted_rand_score(small_regions, target_regions))
    return rho, p_value, ri, ari


def region_edges(regions: pd.DataFrame, k: int) -> np.ndarray:
    """The K+1 edges. Regions 0 and K-1 hold the min and the max, so they are never empty
    (and always in regions.csv, which lists only non-empty regions)."""
    return np.linspace(regions["lo"].min(), regions["hi"].max(), k + 1)


def composition(run: Run) -> tuple[str | None, pd.DataFrame | None, str]:
    """(field, shares per value: full data and each coreset, note). Shares None -> skipped,
    and the note says why."""
    data_cfg = run.cfg.data
    try:
        examples = _examples(run)
    except Exception as err:  # a moved/unreadable data set only costs this section
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, None, f"the run's data ({data_cfg.path}) could not be read: {reason}."
    wanted = run.cfg.report.composition_field
    keys = set().union(*(e.row.keys() for e in examples))
    name = wanted or next((f for f in ("task", "topic") if f in keys), None)
    if name is None:
        return None, None, ("the rows have no 'task' or 'topic' field; set "
                            "report.composition_field to compare by another field.")
    if name not in keys:
        return None, None, f"report.composition_field == {name!r}, but no row has that field."
    value_of = {e.id: _value(e.row.get(name)) for e in examples}
    series = {"full data": pd.Series(list(value_of.values()))}
    unknown = 0
    for rate in run.rates:
        values = [value_of.get(i) for i in rate.ids]
        unknown += sum(v is None for v in values)
        series[f"p = {rate.pruning_rate:.2f}"] = pd.Series(
            ["(not in data)" if v is None else v for v in values])
    counts = pd.DataFrame({k: s.value_counts() for k, s in series.items()}).fillna(0)
    counts = counts.sort_values("full data", ascending=False, kind="stable")
    if len(counts) > MAX_VALUES:
        rest = counts.iloc[MAX_VALUES - 1:].sum().rename("(other)")
        counts = pd.concat([counts.iloc[:MAX_VALUES - 1], rest.to_frame().T])
    note = (f"{unknown} selected id(s) are not in the data any more: it changed since the run."
            if unknown else "")
    return name, counts / counts.sum(), note


def _examples(run: Run):
    """The run's samples, read once per report (composition and flagged rows need them)."""
    if "_examples" not in run.__dict__:
        from ..data import load_rows, to_examples

        data_cfg = run.cfg.data
        run.__dict__["_examples"] = to_examples(load_rows(data_cfg), data_cfg,
                                                source=data_cfg.path)
    return run.__dict__["_examples"]


FLAG_FIELD = "note"  # the demo data marks its planted rows: note = duplicate / wrong_answer


def flagged_counts(run: Run) -> pd.DataFrame | None:
    """Rows flagged in the data (field ``note``, as the demo plants duplicates and wrong
    answers "for selection to find"), per coreset: how many it kept, against the mean of a
    uniform random draw of the same size, count * m / N (the hypergeometric mean). None when
    no row has the field."""
    try:
        examples = _examples(run)
    except Exception:  # noqa: BLE001 - the composition section already says why
        return None
    flag_of = {e.id: e.row.get(FLAG_FIELD) for e in examples
               if e.row.get(FLAG_FIELD) not in (None, "")}
    if not flag_of:
        return None
    totals = pd.Series(list(flag_of.values())).value_counts().sort_index()
    rows = []
    for rate in run.rates:
        kept = pd.Series([flag_of[i] for i in rate.ids if i in flag_of]).value_counts()
        for value, total in totals.items():
            rows.append({"pruning rate": f"{rate.pruning_rate:.2f}", FLAG_FIELD: value,
                         "in the data": int(total), "kept": int(kept.get(value, 0)),
                         "random draw of m (mean)": round(total * rate.m / len(examples), 1)})
    return pd.DataFrame(rows)


def _flagged_section(run: Run) -> str:
    table = flagged_counts(run)
    if table is None:
        return ""
    return ("<h2>Flagged rows kept</h2>" + _read(
        f"rows the data marks in its field <code>{FLAG_FIELD}</code> (the demo plants "
        "duplicates and wrong answers), counted in each coreset beside what a uniform random "
        "draw of the same size keeps on average. Fewer than random: the selection avoids them; "
        "more: it favours them (a wrong answer is hard to fit, so a gradient-norm score can "
        "rate it highly). Shown as it is, not as a goal the method promises.") + _table(table))


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


LOW_RHO = 0.3  # below this the small model's ranking says little about the target's


def low_agreement_note(rho: float) -> str:
    """One line on why a low Spearman's rho matters (also logged after verify)."""
    shown = "undefined" if np.isnan(rho) else f"{rho:.2f}"
    return (f"Spearman's ρ between small and target scores on the verified samples is {shown} "
            f"(< {LOW_RHO}): the small model's scores barely predict the target's here, so the "
            "regions say little about the target and V_i carries the selection. STAFF assumes "
            "a small model of the target's family (same tokenizer); with another family "
            "(the demo: SmolLM2 -> Gemma) expect this.")


def _value(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "(missing)"
    return v if isinstance(v, str) else json.dumps(v, default=str)


# ----------------------------------------------------------------------------- html

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
  max-width:1060px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
h3{margin-bottom:.3em} img{max-width:100%;display:block;margin:.5em 0}
.read{color:#555;font-size:.92em;margin:0 0 1.2em} .note{background:#fff7e0;padding:.5em .8em;
  border-left:4px solid #e8b100} .meta{color:#555}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4;text-align:right}
th{background:#f4f5f7} td:first-child,th:first-child{text-align:left}
details{margin:.4em 0 1.2em} summary{cursor:pointer;color:#4c78a8}
code{background:#f4f5f7;padding:0 .25em}
"""


def _e(text) -> str:
    return html.escape(str(text))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _read(text: str) -> str:
    return f'<p class="read"><b>How to read this:</b> {text}</p>'


def _table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.astype(object).itertuples(index=False):  # object: ints stay ints
        cells = "".join(f"<td>{_e(formats[c](v) if c in formats else v)}</td>"
                        for c, v in zip(frame.columns, row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _num(v) -> str:
    return figures._fmt(float(v))


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


def _header(run: Run) -> str:
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


def _scores_section(run: Run) -> str:
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


def _regions_section(run: Run) -> str:
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


def _agreement_section(run: Run) -> str:
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


DECILES = 10


def decile_composition(run: Run, score: str = "effort") -> pd.DataFrame | None:
    """Per score decile of the full data: its score range, each coreset's share of it, and the
    2.5-97.5% range of that share in a uniform random draw of the same size (hypergeometric:
    the decile's count among N, m drawn). A coreset whose shares sit inside the random ranges
    is, by this score, what a random draw would have kept. None without the score."""
    from scipy.stats import hypergeom

    if score not in run.scores.columns or run.scores.empty:
        return None
    values = run.scores[score].to_numpy(dtype=float)
    edges = np.quantile(values, np.linspace(0, 1, DECILES + 1))
    decile = np.clip(np.searchsorted(edges[1:-1], values, side="right"), 0, DECILES - 1)
    of = dict(zip(run.scores["id"].astype(str), decile))
    counts = np.bincount(decile, minlength=DECILES)
    table = pd.DataFrame({"decile": np.arange(1, DECILES + 1), "lo": edges[:-1],
                          "hi": edges[1:], "samples": counts})
    for rate in run.rates:
        kept = np.bincount([of[i] for i in rate.ids if i in of], minlength=DECILES)
        name = f"p = {rate.pruning_rate:.2f}"
        table[name] = kept / max(rate.m, 1)
        low = hypergeom.ppf(0.025, len(values), counts, rate.m) / max(rate.m, 1)
        high = hypergeom.ppf(0.975, len(values), counts, rate.m) / max(rate.m, 1)
        table[f"{name} random 95%"] = [f"{100 * a:.1f}–{100 * b:.1f} %"
                                       for a, b in zip(low, high)]
        table.attrs[name] = (low, high)
    return table


def _decile_section(run: Run) -> str:
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


def _composition_section(run: Run) -> str:
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


def _timings_section(run: Run) -> str:
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
                       "the only stage that runs the target, on K·b_v samples at most."
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


def build_report(run_dir: str | Path, *, method: str | None = None,
                 benchmark: list[dict] | None = None) -> Path:
    """Write the report on ``method``'s coresets (default: STAFF's, else the folder's only
    method) atomically -- ``report.html`` for STAFF, ``report-<method>.html`` for another --
    and return its path. ``benchmark``: rows for :func:`benchmark_section`, left out when None."""
    run = read_run(run_dir, method)
    if not run.rates:
        raise ReportError(f"{L.selections_dir(run.path, run.method) / L.SUMMARY} lists no "
                          "pruning rate.")
    if run.method == "staff":
        body = [_header(run), _scores_section(run), _regions_section(run),
                _agreement_section(run), _decile_section(run), _composition_section(run),
                _flagged_section(run), _timings_section(run)]
    else:  # no regions and no small model: what was kept, and what it cost
        body = [_header(run), _composition_section(run), _flagged_section(run),
                _timings_section(run)]
    if benchmark:
        body.append(benchmark_section(benchmark))
    body = _numbered(body)
    title = "STAFF" if run.method == "staff" else run.method
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)} report: {_e(run.path.name)}</title><style>{CSS}</style></head>"
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")
    out = run.path / L.report_name(run.method)
    write_atomic(out, page)
    log.info("report written: %s", out)
    return out


def _numbered(parts: list[str]) -> list[str]:
    """Sections numbered in the order shown (a baseline's report leaves some out)."""
    import re

    count = iter(range(1, 100))
    return [re.sub(r"<h2([^>]*)>(?:\d+\. )?", lambda m: f"<h2{m.group(1)}>{next(count)}. ", part)
            for part in parts]


def build_reports(run_dir: str | Path) -> list[Path]:
    """A report for every method with coresets in the folder (``staff report``)."""
    from ..runs.result import methods_in

    methods = methods_in(run_dir) or [None]  # None: read_run names what is missing
    return [build_report(run_dir, method=m) for m in methods]
