"""How much of a method's ROUGE-L difference is the length of what its model generates?
(issues 14 and 15)

    python bench/generation_length.py BENCH_DIR|RESULTS_JSON [--rate 0.9] [--baseline random]
        [--out FILE]

A coreset with shorter responses (STAFF's: effort falls with response length) can teach the
target to stop earlier. With greedy decoding on a lightly tuned model that alone moves ROUGE-L,
which rewards outputs of about the reference's length, while the teacher-forced loss — the
bench's low-variance metric — does not move. This reads every coreset cell's greedy
predictions (``BENCH_DIR/cells/<method>/p0.90/s<seed>/eval/predictions.jsonl``) and gives per
cell: words generated per reference word, the share of run-on outputs (more than twice the
reference's words), and ROUGE-L. Given a results.json instead, it takes each cell's
``length_ratio`` (recorded by every evaluation since 2026-11-30; no run-on share). Then one
least-squares fit over the cells,

    ROUGE-L = a + b · (generated / reference words) + c_method   (c_baseline = 0),

whose c_method is a method's ROUGE-L difference at equal output length, with a 95% t interval
(cells are the observations: few, so the interval is wide and says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.runs.folder import write_atomic  # noqa: E402
from staff.runs.layout import EVAL_DIR, PREDICTIONS, rate_dir  # noqa: E402

RUN_ON = 2.0  # a prediction with more than RUN_ON × its reference's words


def cell_lengths(predictions: Path) -> dict:
    """Length figures and mean ROUGE-L of one cell's predictions.jsonl."""
    generated, reference, run_on, rouge = 0, 0, 0, []
    with open(predictions, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            g, r = len(row["prediction"].split()), len(row["references"][0].split())
            generated, reference = generated + g, reference + r
            run_on += g > RUN_ON * r
            rouge.append(row["rouge_l"])
    n = len(rouge)
    if n == 0:
        raise SystemExit(f"{predictions}: no predictions")
    return {"n": n, "generated_words": generated / n, "reference_words": reference / n,
            "ratio": generated / reference, "run_on": run_on / n,
            "rouge_l": float(np.mean(rouge))}


def read_cells(bench_dir: Path, rate: float) -> list[dict]:
    """Every coreset cell at ``rate`` that has predictions, as {method, seed, ...lengths}."""
    cells = []
    for path in sorted((bench_dir / "cells").glob(f"*/{rate_dir(rate)}/s*/{EVAL_DIR}/{PREDICTIONS}")):
        seed_dir = path.parents[1]
        method = seed_dir.parents[1].name
        cells.append({"method": method, "seed": int(seed_dir.name.lstrip("s")),
                      **cell_lengths(path)})
    return cells


def results_cells(results: dict, rate: float) -> list[dict]:
    """The same from a bench's results.json: epochs-protocol cells at ``rate`` that recorded a
    length ratio (the run-on share needs the predictions: None)."""
    return [{"method": e["method"], "seed": e["seed"], "ratio": e["length_ratio"],
             "run_on": None, "rouge_l": e["rouge_l"]}
            for e in results.get("cells", {}).values()
            if e.get("rate") == rate and e.get("protocol", "epochs") == "epochs"
            and e.get("length_ratio") is not None and e.get("rouge_l") is not None]


def length_adjusted(cells: list[dict], baseline: str) -> dict[str, dict]:
    """{method: {raw, adjusted, low, high, cells}}: the method's mean ROUGE-L minus the
    baseline's (raw) and its c_method in the fit above with a 95% t interval."""
    methods = sorted({c["method"] for c in cells} - {baseline})
    if not any(c["method"] == baseline for c in cells) or not methods:
        return {}
    y = np.array([c["rouge_l"] for c in cells])
    columns = [np.ones(len(cells)), np.array([c["ratio"] for c in cells])]
    columns += [np.array([c["method"] == m for c in cells], dtype=float) for m in methods]
    x = np.column_stack(columns)
    dof = len(cells) - x.shape[1]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    if dof < 1:
        spread = np.full(len(coef), np.nan)
    else:
        sigma2 = float(np.sum((y - x @ coef) ** 2)) / dof
        spread = stats.t.ppf(0.975, dof) * np.sqrt(np.diag(sigma2 * np.linalg.pinv(x.T @ x)))
    base = y[[c["method"] == baseline for c in cells]].mean()
    out = {}
    for k, m in enumerate(methods, start=2):
        mine = [c["method"] == m for c in cells]
        out[m] = {"raw": float(y[mine].mean() - base), "adjusted": float(coef[k]),
                  "low": float(coef[k] - spread[k]), "high": float(coef[k] + spread[k]),
                  "cells": int(sum(mine))}
    out["_fit"] = {"slope": float(coef[1]), "dof": dof,
                   "r": float(np.corrcoef(columns[1], y)[0, 1]) if len(cells) > 1 else float("nan")}
    return out


def markdown(cells: list[dict], adjusted: dict, baseline: str, rate: float) -> str:
    lines = [f"| method | seed | words generated / reference | run-on outputs (> {RUN_ON:g}×) "
             f"| ROUGE-L |", "|---|---:|---:|---:|---:|"]
    for c in sorted(cells, key=lambda c: (c["method"], c["seed"])):
        run_on = "–" if c["run_on"] is None else f"{100 * c['run_on']:.0f}%"
        lines.append(f"| {c['method']} | {c['seed']} | {c['ratio']:.2f} | {run_on} "
                     f"| {c['rouge_l']:.1f} |")
    if adjusted:
        fit = adjusted["_fit"]
        # The slope is within methods (the fit has one offset per method); r is the plain
        # correlation across all cells, so the two can differ in sign with few cells.
        lines += ["", f"Fit over {len(cells)} cells at p = {rate}: within a method, ROUGE-L "
                  f"changes by {fit['slope']:+.1f} points per unit of the length ratio "
                  f"({fit['dof']} degrees of freedom; across all cells r = {fit['r']:+.2f}).", "",
                  f"| method | cells | ROUGE-L − {baseline} | at equal output length [95%] |",
                  "|---|---:|---:|---:|"]
        for m, a in adjusted.items():
            if m != "_fit":
                lines.append(f"| {m} | {a['cells']} | {a['raw']:+.1f} | {a['adjusted']:+.1f} "
                             f"[{a['low']:+.1f}, {a['high']:+.1f}] |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a bench's output_dir (it holds cells/) or "
                        "its results.json")
    parser.add_argument("--rate", type=float, default=0.9)
    parser.add_argument("--baseline", default="random")
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = parser.parse_args(argv)
    if args.source.is_file():
        cells = results_cells(json.loads(args.source.read_text(encoding="utf-8")), args.rate)
    else:
        cells = read_cells(args.source, args.rate)
    if not cells:
        raise SystemExit(f"{args.source}: no cell at p = {args.rate} has predictions or a "
                         "length ratio")
    text = markdown(cells, length_adjusted(cells, args.baseline), args.baseline, args.rate)
    print(text, end="")
    if args.out:
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
