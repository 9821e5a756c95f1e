"""Copy a bench's results into the repository, with tables and cells.csv from this code.

    python bench/publish.py CONFIG BENCH_DIR DEST

A long bench runs from a clone at a fixed commit, in its own folder (``output_dir``). This
copies what the repository keeps — ``results.json`` and ``bench.yaml`` (the resolved config) —
into DEST (e.g. ``bench/results/multi30k-powered``) and writes ``tables.md`` and ``cells.csv``
there with the current code and CONFIG (the bench's YAML as this checkout has it: its methods
and parts lay out the tables), so that tables added since the clone's commit (the variants
against the paper's rule, the output-length table) appear without touching the running
bench's folder. N comes from BENCH_DIR's selection runs. A decoded cell evaluated before
evaluations recorded ``length_ratio`` gets it in the copy, computed from its predictions in
BENCH_DIR (the same formula, ``staff.evaluation.metrics.length_ratio``). Files appear
atomically.

So that a bench outlives the machine it ran on, the copy also keeps what another machine needs
to go on (``staff.bench.archive``; the bench config's ``resume_from`` names DEST): the cells of
DEST's results.json that BENCH_DIR lacks are kept (same settings; BENCH_DIR's win), and every
selection run folder goes to DEST/select/ without weights, embeddings or the coresets' rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.bench import load_bench_config  # noqa: E402
from staff.bench.archive import archive_selections  # noqa: E402
from staff.bench.results import merge_results, read_store  # noqa: E402
from staff.bench.grid import write_tables  # noqa: E402
from staff.evaluation.metrics import length_ratio  # noqa: E402
from staff.runs.folder import write_atomic, write_json  # noqa: E402
from staff.runs.layout import EVAL_DIR, PREDICTIONS, rate_dir  # noqa: E402


def cell_eval_dir(bench_dir: Path, entry: dict) -> Path:
    """Where the grid evaluated a cell (``staff.bench.grid``'s layout)."""
    cells = bench_dir / "cells"
    if entry["method"] == "untuned":
        return cells / "untuned" / EVAL_DIR
    if entry["method"] == "full":
        return cells / "full" / f"s{entry['seed']}" / EVAL_DIR
    steps = "-steps" if entry.get("protocol", "epochs") == "steps" else ""
    return (cells / entry["method"].replace(":", "-") / rate_dir(entry["rate"])
            / f"s{entry['seed']}{steps}" / EVAL_DIR)


def backfill_length_ratio(results: dict, bench_dir: Path) -> int:
    """Set ``length_ratio`` of decoded cells that lack it, from their predictions; returns how
    many were set."""
    done = 0
    for entry in results.get("cells", {}).values():
        if entry.get("rouge_l") is None or entry.get("length_ratio") is not None:
            continue
        path = cell_eval_dir(bench_dir, entry) / PREDICTIONS
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
        _, ratio = length_ratio([r["prediction"] for r in rows], [r["references"] for r in rows])
        entry["length_ratio"] = round(ratio, 4)
        done += 1
    return done


def publish(config: Path, bench_dir: Path, dest: Path) -> list[Path]:
    """The four files in ``dest``; returns their paths."""
    results_path, config_path = bench_dir / "results.json", bench_dir / "bench.yaml"
    for path in (results_path, config_path):
        if not path.is_file():
            raise SystemExit(f"{path} is missing: not a bench folder (staff bench writes it)")
    text = results_path.read_text(encoding="utf-8")
    results = json.loads(text)   # read once: a running bench may rewrite the file meanwhile
    cfg = load_bench_config(config)
    backfill_length_ratio(results, bench_dir)
    old = read_store(dest / "results.json")  # cells published from another machine stay
    if old and old.get("fingerprint") != results.get("fingerprint"):
        print(f"{dest / 'results.json'} was made with other settings: replaced, not merged "
              "(git history keeps it)", file=sys.stderr)
    results = merge_results(old, results)
    write_json(dest / "results.json", results)
    write_atomic(dest / "bench.yaml", config_path.read_text(encoding="utf-8"))
    tables = write_tables(results, cfg, dest, source=bench_dir)
    runs = archive_selections(bench_dir, dest)
    return [dest / "results.json", dest / "bench.yaml", tables, dest / "cells.csv", *runs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the bench's YAML config")
    parser.add_argument("bench_dir", type=Path, help="the bench's output_dir")
    parser.add_argument("dest", type=Path, help="where the repository keeps its results")
    args = parser.parse_args(argv)
    for path in publish(args.config, args.bench_dir, args.dest):
        print(path)


if __name__ == "__main__":
    main()
