"""``cells.csv``: one row per (cell, metric), the bench's machine-readable result.

Columns: dataset, n_train, n_test, small, target, method, rate, seed, protocol, metric, value.
Metrics: ``loss`` (held-out response NLL), ``rougeL``, ``bleu`` and ``length_ratio`` (words
generated per reference word; decoded cells only) and
``selection_seconds`` (the selection run's overhead; the same for every rate of a seed). The
full-data cell has rate 0 and the untuned target an empty rate and seed. ``n_train`` is the
full data's size N (a coreset has N(1-p) samples); ``n_test`` the held-out examples the
metric averages (the loss may use more examples than the decoding).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..runs.folder import write_atomic
from ..runs.layout import STATE

COLUMNS = ("dataset", "n_train", "n_test", "small", "target", "method", "rate", "seed",
           "protocol", "metric", "value")


def full_size(results: dict, out_dir: Path | None) -> int | str:
    """N: the full-data cell's training size, or (a bench run without one, e.g. with
    ``full_seeds: []``) the data size a selection run recorded in its state.json."""
    cells, selection = results.get("cells", {}), results.get("selection", {})
    n = next((e.get("n_train") for e in cells.values() if e["method"] == "full"), None)
    if n is not None or out_dir is None:
        return "" if n is None else n
    for run in selection.values():
        # run_dir is relative to where the bench ran; its last three parts are
        # select/<method>/s<seed>/ inside the bench folder.
        state = Path(out_dir).joinpath(*Path(run["run_dir"]).parts[-3:], STATE)
        if state.is_file():
            n = json.loads(state.read_text(encoding="utf-8")).get("data", {}).get("n")
            if n is not None:
                return n
    return ""


def cell_rows(results: dict, cfg, out_dir: Path | None = None) -> list[dict]:
    cells = results.get("cells", {})
    selection = results.get("selection", {})
    n_train = full_size(results, out_dir)
    common = {"dataset": cfg.dataset_name(), "n_train": n_train,
              "target": cfg.select.target.name}
    rows = []
    for entry in cells.values():
        method = entry["method"]
        small = ("" if method in ("full", "untuned", "random", "length")
                 else cfg.selection_config(method, 0, cfg.all_rates()).small.name
                 if method.startswith("staff") else cfg.select.target.name)
        base = dict(common, small=small, method=method,
                    rate="" if entry["rate"] is None else entry["rate"],
                    seed="" if entry["seed"] is None else entry["seed"],
                    protocol=entry.get("protocol", "epochs"))
        if entry.get("loss") is not None:
            rows.append(dict(base, n_test=entry.get("n_loss", ""), metric="loss",
                             value=round(entry["loss"], 6)))
        for key, metric in (("rouge_l", "rougeL"), ("bleu", "bleu"),
                            ("length_ratio", "length_ratio")):
            if entry.get(key) is not None:
                rows.append(dict(base, n_test=entry.get("n_eval", ""), metric=metric,
                                 value=round(entry[key], 4)))
        run = selection.get(f"{method}/s{entry['seed']}")
        if run is not None:
            rows.append(dict(base, n_test="", metric="selection_seconds",
                             value=round(run["overhead"], 1)))
    order = {m: i for i, m in enumerate(("loss", "rougeL", "bleu", "length_ratio",
                                         "selection_seconds"))}
    rows.sort(key=lambda r: (str(r["method"]), str(r["rate"]), str(r["protocol"]),
                             str(r["seed"]), order[r["metric"]]))
    return rows


def write_cells_csv(path: str | Path, results: dict, cfg, source: Path | None = None) -> Path:
    """``path`` from the results store; ``source``: the bench folder whose selection runs name
    N (default: the folder ``path`` is in)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(cell_rows(results, cfg, Path(source) if source else Path(path).parent))
    write_atomic(Path(path), buffer.getvalue())
    return Path(path)
