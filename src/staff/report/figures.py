"""The report's figures: each function takes plain arrays/tables and returns PNG bytes.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg renderer, never through
``pyplot``: no global backend switch, no figure registry, nothing left open between calls.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# One colour per role, the same in every figure.
SIZE, BUDGET, SELECTED, FACTOR = "#c8ccd2", "#4c78a8", "#f58518", "#54a24b"
SMALL, TARGET, EDGE, PRUNED = "#4c78a8", "#e45756", "#555555", "#bab0ac"
SERIES = ["#6b6b6b", "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2",
          "#ff9da6", "#9d755d", "#eeca3b"]
DPI = 100


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)


# ----------------------------------------------------------------------------- 1. scores

def score_histogram(effort: np.ndarray, edges: np.ndarray, pruned: np.ndarray | None = None,
                    ) -> bytes:
    """Histogram of the speculative (effort) scores with the K+1 region edges as lines.
    ``pruned`` marks hard-pruned samples (outside every region); they are drawn grey."""
    effort = np.asarray(effort, dtype=float)
    pruned = np.zeros(len(effort), bool) if pruned is None else np.asarray(pruned, bool)
    k = len(edges) - 1
    lo, hi = float(min(effort.min(), edges[0])), float(max(effort.max(), edges[-1]))
    # A few bins per region, so the shape inside a region shows; at most 150 bins.
    n_bins = int(np.clip(3 * k, 30, 150))
    bins = np.linspace(lo, hi, n_bins + 1) if hi > lo else n_bins
    fig = _figure(10, 3.6)
    ax = fig.add_subplot()
    if pruned.any():
        ax.hist([effort[~pruned], effort[pruned]], bins=bins, stacked=True,
                color=[SMALL, PRUNED], label=["in a region", "hard-pruned (no region)"])
    else:
        ax.hist(effort, bins=bins, color=SMALL)
    for x in edges:
        ax.axvline(x, color=EDGE, linewidth=0.6, linestyle=(0, (3, 3)), alpha=0.7)
    ax.set_xlabel("speculative score (effort on the fine-tuned small model)")
    ax.set_ylabel("samples")
    ax.set_title(f"{len(effort)} samples, K = {k} regions of equal width (dashed: edges)",
                 fontsize=11)
    if pruned.any():
        ax.legend(frameon=False)
    _style(ax)
    return _png(fig)


# ----------------------------------------------------------------------------- 2. regions

def region_chart(regions: pd.DataFrame, edges: np.ndarray | None = None) -> bytes:
    """The paper's Figure 3 b) for one pruning rate: per region its size, budget and selected
    count (bars, left axis) and its verification factor V_i (dots, right axis; 1 = agreement).
    ``regions`` has columns region, lo, hi, size, factor, budget, selected; with the K+1
    ``edges``, the empty regions it leaves out are drawn too (no bars, no V_i)."""
    table = regions.sort_values("region")
    if edges is not None:
        k = len(edges) - 1
        table = table.set_index("region").reindex(range(k)).rename_axis("region")
        table[["size", "budget", "selected"]] = table[["size", "budget", "selected"]].fillna(0)
        table["lo"] = edges[:-1]
        table = table.reset_index()
    x = np.arange(len(table))
    k = len(table)
    fig = _figure(10, 4.2)
    ax = fig.add_subplot()
    width = 0.28
    ax.bar(x - width, table["size"], width, color=SIZE, label="size |B_i|")
    ax.bar(x, table["budget"], width, color=BUDGET, label="budget m_B")
    ax.bar(x + width, table["selected"], width, color=SELECTED, label="selected")
    ax.set_ylabel("samples")
    ax.set_xlabel("region (by speculative score, low to high; label = lower edge)")
    step = max(1, int(np.ceil(k / 25)))  # at most ~25 tick labels
    ax.set_xticks(x[::step])
    ax.set_xticklabels([f"{r}\n{lo:.3g}" for r, lo in zip(table["region"], table["lo"])][::step],
                       fontsize=8)
    ax.set_xlim(-0.7, k - 0.3)
    _style(ax)
    right = ax.twinx()
    right.plot(x, table["factor"], "o", color=FACTOR, markersize=5, label="V_i (right axis)")
    right.axhline(1.0, color=FACTOR, linewidth=0.8, linestyle=":")
    right.set_ylabel("verification factor V_i", color=FACTOR)
    right.tick_params(axis="y", colors=FACTOR)
    right.set_ylim(bottom=0, top=max(2.0, float(np.nanmax(table["factor"])) * 1.1
                                     if len(table) else 2.0))
    right.spines[["top"]].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    ax.legend(handles, labels, frameon=False, ncol=4, loc="upper center",
              bbox_to_anchor=(0.5, 1.12), fontsize=9)
    return _png(fig)


# ----------------------------------------------------------------------------- 3. agreement

def agreement_chart(small: np.ndarray, target: np.ndarray, region: np.ndarray, rho: float,
                    rand_index: float) -> bytes:
    """Left: target vs small effort of each verified sample, coloured by its region. Right:
    the samples in order of their small-model score, both scores divided by their own mean
    (the view of the paper's Figure 4: same-family models rise together)."""
    small, target = np.asarray(small, float), np.asarray(target, float)
    fig = _figure(10, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.25])
    points = left.scatter(small, target, c=region, cmap="viridis", s=18, alpha=0.85,
                          edgecolors="none")
    left.set_xlabel("small model effort (speculative)")
    left.set_ylabel("target model effort (verification)")
    left.set_title(f"Spearman's ρ = {_fmt(rho)}, Rand index = {_fmt(rand_index)}", fontsize=11)
    fig.colorbar(points, ax=left, label="region (small model)", pad=0.01,
                 ticks=MaxNLocator(integer=True))
    _style(left)
    order = np.argsort(small, kind="stable")
    pos = np.arange(len(order))
    for values, colour, name in ((small, SMALL, "small"), (target, TARGET, "target")):
        mean = values.mean() if len(values) and values.mean() != 0 else 1.0
        right.plot(pos, values[order] / mean, "-o", color=colour, markersize=2.5,
                   linewidth=1, label=f"{name} / its mean")
    right.set_xlabel("verified samples, by small-model score")
    right.set_ylabel("score / mean score")
    right.set_title(f"{len(small)} verified samples", fontsize=11)
    right.legend(frameon=False, fontsize=9)
    _style(right)
    return _png(fig)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


# ----------------------------------------------------------------------------- 4. composition

def composition_chart(shares: pd.DataFrame, field: str) -> bytes:
    """Grouped bars: the share (%) of each value of ``field`` in the full data and in each
    coreset. ``shares``: one row per value, one column per series ('full data', 'p = 0.50')."""
    values, series = list(shares.index), list(shares.columns)
    x = np.arange(len(values))
    width = 0.8 / len(series)
    fig = _figure(10, 4.0)
    ax = fig.add_subplot()
    for j, name in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, 100 * shares[name], width,
               color=SERIES[j % len(SERIES)], label=name)
    ax.set_xticks(x)
    rotate = len(values) > 6 or max((len(str(v)) for v in values), default=0) > 12
    ax.set_xticklabels([str(v) for v in values], rotation=30 if rotate else 0,
                       ha="right" if rotate else "center", fontsize=9)
    ax.set_ylabel("share of samples (%)")
    ax.set_xlabel(field)
    ax.legend(frameon=False, ncol=min(len(series), 5), fontsize=9)
    _style(ax)
    return _png(fig)


def decile_chart(table: pd.DataFrame, rates: list[str]) -> bytes:
    """Grouped bars: each coreset's share (%) of every score decile, over the 95% range of a
    random draw of the same size (grey band per rate, ``table.attrs[rate] = (low, high)``)."""
    x = np.arange(len(table))
    width = 0.8 / max(len(rates), 1)
    fig = _figure(10, 3.6)
    ax = fig.add_subplot()
    for j, name in enumerate(rates):
        offset = (j - (len(rates) - 1) / 2) * width
        low, high = table.attrs[name]
        ax.bar(x + offset, 100 * (high - low), width, bottom=100 * low, color="#dddddd",
               label="random draw, 95%" if j == 0 else None)
        ax.bar(x + offset, 100 * table[name], width * 0.5, color=SERIES[j % len(SERIES)],
               label=name)
    ax.axhline(100 / len(table), color="grey", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels([str(d) for d in table["decile"]])
    ax.set_xlabel("speculative score decile (1 = lowest)")
    ax.set_ylabel("share of the coreset (%)")
    ax.legend(frameon=False, ncol=min(len(rates) + 1, 5), fontsize=9)
    _style(ax)
    return _png(fig)


# ----------------------------------------------------------------------------- 5. timings

def timings_chart(timings: dict[str, float]) -> bytes:
    """Horizontal bars: wall seconds of each stage, in run order."""
    names, seconds = list(timings), [float(v) for v in timings.values()]
    fig = _figure(10, 0.9 + 0.45 * len(names))
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    ax.barh(y, seconds, color=BUDGET, height=0.6)
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    top = max(seconds, default=0.0)
    for yi, s in zip(y, seconds):
        ax.text(s + top * 0.01, yi, f"{s:.1f} s", va="center", fontsize=9)
    ax.set_xlim(0, top * 1.12 if top > 0 else 1)
    ax.set_xlabel("wall time (s)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    return _png(fig)


# ----------------------------------------------------------------------------- benchmark hook

BENCHMARK_METRICS = (("rougeL", "ROUGE-L"), ("bleu", "BLEU-4"))


def plot_benchmark(results: list[dict]) -> bytes:
    """The paper's Tables 1/2 as plots: each metric vs pruning rate, one line per method.

    ``results``: rows like ``{"method": "staff", "pruning_rate": 0.9, "rougeL": 55.9,
    "bleu": 30.1}``; a missing metric is left out of its panel.
    """
    if not results:
        raise ValueError("plot_benchmark: results is empty, give at least one row.")
    frame = pd.DataFrame(results)
    for column in ("method", "pruning_rate"):
        if column not in frame:
            raise ValueError(f"plot_benchmark: rows lack '{column}' (got {sorted(frame)}).")
    metrics = [(k, name) for k, name in BENCHMARK_METRICS if k in frame]
    if not metrics:
        raise ValueError("plot_benchmark: rows have neither 'rougeL' nor 'bleu'.")
    fig = _figure(5 * len(metrics), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    methods = list(dict.fromkeys(frame["method"]))
    for ax, (key, name) in zip(axes, metrics):
        for j, method in enumerate(methods):
            rows = frame[(frame["method"] == method) & frame[key].notna()]
            rows = rows.sort_values("pruning_rate")
            ax.plot(100 * rows["pruning_rate"], rows[key], "-o", markersize=4,
                    color=SERIES[(j + 1) % len(SERIES)], label=str(method),
                    linewidth=2.2 if str(method).lower() == "staff" else 1.2)
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(name)
        _style(ax)
    axes[0].legend(frameon=False, fontsize=9)
    return _png(fig)
