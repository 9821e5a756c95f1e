"""What each coreset of a bench is made of: its share of the lowest and highest effort deciles
and of the data's response-length thirds, against a random draw's expectation (10%, 10%; a
third each).

    python bench/composition.py bench/results/multi30k-powered --rate 0.95
    python bench/composition.py runs/bench/dialogsum-powered --rate 0.9 --methods staff,random

Deciles and thirds are cut on the reference scores (``--scores``; default: STAFF's own stage 1,
``select/staff/s*/scores.csv``, the target's effort when it is its own small model), so a draft's
or a variant's coreset is placed on the same scale as the paper rule's. Reads the selection
runs' ``ids.txt`` (``select/<method>/s<seed>/selections/[<method>/]p<rate>/ids.txt``), which
the bench keeps and ``bench/publish.py`` archives. One row per method: the mean over its seeds,
the range in brackets where there are several.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def read_scores(path: Path) -> tuple[dict[str, float], dict[str, int]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"id", "effort", "n_response_tokens"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"{path}: no column {', '.join(sorted(missing))}")
    return ({r["id"]: float(r["effort"]) for r in rows},
            {r["id"]: int(r["n_response_tokens"]) for r in rows})


def coresets(select: Path, rate: float) -> dict[str, dict[int, list[str]]]:
    """{method: {seed: ids}} for every selection run under ``select`` at this rate."""
    tag = f"p{rate:.2f}"
    found: dict[str, dict[int, list[str]]] = {}
    for ids_file in sorted(select.glob(f"*/s*/selections/**/{tag}/ids.txt")):
        run = ids_file.parents[2] if ids_file.parent.parent.name == "selections" \
            else ids_file.parents[3]
        folder, seed = run.parent.name, int(run.name[1:])
        inner = ids_file.parent.parent.name
        method = folder.replace("-", ":", 1) if inner == "selections" else inner
        ids = [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines()
               if line.strip()]
        found.setdefault(method, {})[seed] = ids
    return found


def shares(ids: list[str], effort: dict[str, float], length: dict[str, int],
           edges: tuple[float, float], thirds: tuple[float, float]) -> dict[str, float]:
    unknown = [i for i in ids if i not in effort]
    if unknown:
        raise SystemExit(f"coreset id {unknown[0]!r} is not in the reference scores "
                         "(another dataset or N?)")
    e = np.array([effort[i] for i in ids])
    n = np.array([length[i] for i in ids])
    return {"low": float(np.mean(e <= edges[0])), "high": float(np.mean(e >= edges[1])),
            "short": float(np.mean(n <= thirds[0])),
            "middle": float(np.mean((n > thirds[0]) & (n <= thirds[1]))),
            "long": float(np.mean(n > thirds[1])), "tokens": float(n.mean())}


def table(folder: Path, rate: float, methods: list[str] | None = None,
          scores: Path | None = None) -> str:
    select = folder / "select"
    if not select.is_dir():
        raise SystemExit(f"{folder}: no select/ folder (a bench folder or its published copy)")
    if scores is None:
        candidates = sorted(select.glob("staff/s*/scores.csv"))
        if not candidates:
            raise SystemExit(f"{select}/staff/s*/scores.csv: none; give --scores")
        scores = candidates[0]
    effort, length = read_scores(scores)
    e, n = np.array(list(effort.values())), np.array(list(length.values()))
    edges = tuple(np.quantile(e, [0.1, 0.9]))
    thirds = tuple(np.quantile(n, [1 / 3, 2 / 3]))
    data = shares(list(effort), effort, length, edges, thirds)
    runs = coresets(select, rate)
    if methods:
        absent = [m for m in methods if m not in runs]
        if absent:
            raise SystemExit(f"--methods: no coreset at p = {rate:g} for {', '.join(absent)} "
                             f"(found: {', '.join(sorted(runs)) or 'none'})")
        runs = {m: runs[m] for m in methods}
    lines = [f"Coresets at p = {rate:g}, effort deciles and response-length thirds cut on "
             f"{scores} (N = {len(effort):,}; the data's mean response: "
             f"{data['tokens']:.1f} tokens).", "",
             "| method | seeds | lowest effort decile | highest effort decile "
             "| short / middle / long third | mean response tokens |",
             "|---|---:|---:|---:|---:|---:|",
             f"| *the data (a random draw's expectation)* | | {data['low']:.0%} "
             f"| {data['high']:.0%} | {data['short']:.0%} / {data['middle']:.0%} / "
             f"{data['long']:.0%} | {data['tokens']:.1f} |"]

    def cell(values: list[float], fmt: str) -> str:
        text = format(np.mean(values), fmt)
        if len(values) > 1 and max(values) - min(values) > 1e-12:
            text += f" [{format(min(values), fmt)}–{format(max(values), fmt)}]"
        return text

    for method, by_seed in sorted(runs.items()):
        rows = [shares(ids, effort, length, edges, thirds) for _, ids in sorted(by_seed.items())]
        col = {k: [r[k] for r in rows] for k in rows[0]}
        lines.append(f"| {method} | {len(rows)} | {cell(col['low'], '.0%')} "
                     f"| {cell(col['high'], '.0%')} | {np.mean(col['short']):.0%} / "
                     f"{np.mean(col['middle']):.0%} / {np.mean(col['long']):.0%} "
                     f"| {cell(col['tokens'], '.1f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path, help="a bench folder or its published copy")
    ap.add_argument("--rate", type=float, required=True, help="pruning rate, e.g. 0.9")
    ap.add_argument("--methods", help="comma-separated, e.g. staff,staff:prune,random")
    ap.add_argument("--scores", type=Path, help="reference scores.csv (default: STAFF's)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    if args.scores is not None and not args.scores.is_file():
        raise SystemExit(f"{args.scores}: no such file")
    text = table(args.bench, args.rate, args.methods.split(",") if args.methods else None,
                 args.scores)
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
