"""The numbers the report shows, computed from what ``read`` returns: small/target agreement,
region edges, composition of the coresets by a data field and by score decile, flagged rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .read import Run


MAX_VALUES = 12  # composition: the most frequent values, the rest as "other"


def region_labels(scores: np.ndarray, k: int) -> np.ndarray:
    """K equal-width regions over [min, max] of ``scores`` (as ``make_regions`` draws them)."""
    from ..selection.regions import make_regions

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


def random_mean_range(values: np.ndarray, m: int) -> tuple[float, float]:
    """Where 95% of uniform random draws of m of ``values`` (without replacement) put their
    mean: normal approximation with the finite-population correction."""
    n = len(values)
    spread = float(np.std(values, ddof=1)) if n > 1 else 0.0
    half = 1.96 * spread / np.sqrt(m) * np.sqrt(max(n - m, 0) / max(n - 1, 1))
    mean = float(np.mean(values))
    return mean - half, mean + half


def response_lengths(run: Run) -> pd.DataFrame | None:
    """Per coreset: its mean response length (tokens, from scores.csv), the full data's, their
    ratio, and the range in which 95% of uniform random draws of the same size put that mean
    (``random_mean_range``). None without lengths, or when every response has one length."""
    column = "n_response_tokens"
    if column not in run.scores.columns or run.scores.empty:
        return None
    tokens = run.scores[column].to_numpy(dtype=float)
    if len(tokens) < 2 or np.ptp(tokens) == 0:
        return None
    of = dict(zip(run.scores["id"].astype(str), tokens))
    mean = float(tokens.mean())
    rows = []
    for rate in run.rates:
        kept = np.array([of[i] for i in rate.ids if i in of])
        if kept.size == 0:
            continue
        rows.append({"pruning rate": f"{rate.pruning_rate:.2f}", "coreset m": kept.size,
                     "mean response tokens": float(kept.mean()), "full data's": mean,
                     "ratio": float(kept.mean()) / mean,
                     "random draw's 95% range": random_mean_range(tokens, kept.size)})
    return pd.DataFrame(rows) if rows else None


def hardest_samples(run: Run, n: int = 8, width: int = 120) -> pd.DataFrame | None:
    """The ``n`` samples with the highest speculative score, with their text (cut to ``width``
    characters), the small model's loss where scored, and the share of the top tenth of the
    scores each coreset kept. Algorithm 1 over-draws the thin top regions; on data whose
    hardest samples are noise (loose or wrong references) that hurts the target, and
    ``selection.hard_prune`` drops them (BENCHMARKS.md). None when the data cannot be read."""
    scores = run.scores
    if scores is None or "effort" not in scores.columns or len(scores) < 10:
        return None
    try:
        by_id = {e.id: e for e in _examples(run)}
    except Exception:  # noqa: BLE001 - the composition section already says why
        return None
    top = scores.sort_values("effort", ascending=False, kind="stable").head(n)

    def cut(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= width else text[:width - 1] + "…"

    kept = {rate.pruning_rate: {str(i) for i in rate.ids} for rate in run.rates}
    rows = []
    for _, r in top.iterrows():
        e = by_id.get(str(r["id"]))
        rows.append({"id": r["id"], "effort": float(r["effort"]),
                     **({"loss": float(r["loss"])} if "loss" in scores.columns else {}),
                     "prompt": cut(e.prompt) if e else "", "response": cut(e.response) if e else "",
                     **{f"in p = {p:.2f}": ("yes" if str(r["id"]) in ids else "")
                        for p, ids in kept.items()}})
    table = pd.DataFrame(rows)
    cutoff = np.quantile(scores["effort"].to_numpy(float), 0.9)
    top_ids = set(scores.loc[scores["effort"] > cutoff, "id"].astype(str))
    table.attrs["top_share"] = {f"p = {p:.2f}": len(top_ids & ids) / max(len(ids), 1)
                                for p, ids in kept.items()}
    table.attrs["top_n"] = len(top_ids)
    return table
