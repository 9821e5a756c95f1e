"""The headline of BENCHMARKS.md from several benches: per dataset and pruning rate, each STAFF
method (the paper's rule, its variants, a draft small model) minus Random, in held-out loss and
ROUGE-L, with the 95% paired bootstrap interval, and the selection overhead beside it.

    python bench/summary.py bench/results/dialogsum-powered-gpu/results.json \
        runs/bench/multi30k-powered/results.json [--protocol epochs] [--out summary.md]

Reads results.json files only (the bench's own tables use the same statistics:
src/staff/bench/stats.py). A row needs at least one seed that both methods have.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.bench.stats import paired_bootstrap  # noqa: E402
from staff.bench.tables import STAFF_LIKE, name_of, per_seed  # noqa: E402


def cells_of(results: dict, protocol: str) -> dict:
    """{(method, rate): [seeds]} of the coreset cells with this protocol."""
    out: dict = {}
    for cell in results.get("cells", {}).values():
        if cell.get("rate") in (None, 0.0) or cell.get("protocol", "epochs") != protocol:
            continue
        out.setdefault((cell["method"], cell["rate"]), []).append(cell["seed"])
    return out


def overhead(results: dict, method: str) -> tuple[float | None, bool]:
    """Mean selection seconds over the method's selection runs (all stages, the time a
    shared stage took where it was computed), and whether any run took a stage from another
    run: then its seconds were timed there, under that run's load (two variants of one
    stage 1 can show different overheads for the same work)."""
    runs = [v for k, v in results.get("selection", {}).items()
            if k.rsplit("/", 1)[0] == method and v.get("overhead") is not None]
    if not runs:
        return None, False
    return sum(r["overhead"] for r in runs) / len(runs), any(r.get("adopted") for r in runs)


def seconds_text(value: float | None, adopted: bool) -> str:
    return "–" if value is None else f"{value:.0f}{'†' if adopted else ''}"


def diff_text(results, metric, method, rate, seeds, protocol, digits) -> str:
    d = paired_bootstrap(per_seed(results, metric, method, rate, seeds, protocol),
                         per_seed(results, metric, "random", rate, seeds, protocol))
    if d is None:
        return "–"
    mark = " *" if d.excludes_zero else ""
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]{mark}"


def summarise(paths: list[Path], protocol: str = "epochs") -> str:
    lines = ["| bench, N | p | method | seeds | loss − Random [95%] | ROUGE-L − Random [95%] "
             "| selection overhead, s (CCS's) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    any_adopted = False
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = cells_of(results, protocol)
        # N: the full-data cell's size, else a coreset's size over its kept share.
        n_train = next((c["n_train"] if c["method"] == "full" else
                        round(c["n_train"] / (1 - c["rate"]))
                        for c in results.get("cells", {}).values()
                        if c.get("n_train") and c.get("method") != "untuned"), None)
        label = Path(path).parent.name
        ccs = overhead(results, "ccs")
        any_adopted |= ccs[1]
        label = f"{label}, {n_train:,}" if n_train else label
        for (method, rate), seeds in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if method.split(":")[0] not in STAFF_LIKE:
                continue
            common = sorted(set(seeds) & set(cells.get(("random", rate), [])))
            if not common:
                continue
            seconds = overhead(results, method)
            any_adopted |= seconds[1]
            lines.append(
                f"| {label} | {rate:g} | {name_of(method)} | {len(common)} | "
                f"{diff_text(results, 'loss', method, rate, common, protocol, 4)} | "
                f"{diff_text(results, 'rouge_l', method, rate, common, protocol, 1)} | "
                f"{seconds_text(*seconds)}"
                f"{'' if ccs[0] is None else f' ({seconds_text(*ccs)})'} |")
    if any_adopted:
        lines += ["", "† Some stages were taken from another selection run of the bench (the same "
                  "work, e.g. stage 1 held fixed), with the seconds they took there, under that "
                  "run's load: compare such overheads only where they were measured side by "
                  "side."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="results.json files of finished benches")
    ap.add_argument("--protocol", default="epochs", choices=("epochs", "steps"))
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args(argv)
    for p in args.results:
        if not Path(p).is_file():
            raise SystemExit(f"{p}: no such file")
    text = summarise([Path(p) for p in args.results], args.protocol)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
