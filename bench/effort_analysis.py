"""What STAFF's selection rule does with a real effort distribution (issue 15, item 1).

    python bench/effort_analysis.py RUN_DIR [RUN_DIR ...] --out bench/results/effort

RUN_DIR is a finished STAFF selection run folder (scores.csv, verification.csv, config.yaml,
selections/), e.g. a bench's select/staff/s0. Needs no model: everything is recomputed from
those files with the project's own selector. For each run it measures:

  * the score distribution, and how K regions split it under each edge rule (share of the
    samples in the largest region, regions holding >= 1% of them), for K = 20 and 50;
  * Spearman's rho of effort with the response length and with the loss;
  * for each pruning rate selected: the coreset's mean response length against the data's
    (what a random draw gets on average), and its composition by effort decile against a
    random draw of the same size (total variation distance from the deciles' 10% each; the
    random draw's own distance, averaged over 200 draws, is the noise floor);
  * the budgets the paper's rule (Eq. 4) and the authors' 'share' rule give each region with
    the verified target scores of the run, and V_i against the region's score.

Writes OUT/effort_analysis.json, OUT/effort_analysis.md and OUT/effort_analysis.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.selection.base import SelectionInput, coreset_size  # noqa: E402
from staff.selection.regions import EDGE_RULES, make_regions  # noqa: E402
from staff.selection.staff import StaffSelector  # noqa: E402


def region_shares(scores: np.ndarray, k: int) -> dict:
    out = {}
    for rule in EDGE_RULES:
        sizes = make_regions(scores, k, edges=rule).sizes
        out[rule] = {"largest_share": round(float(sizes.max() / len(scores)), 4),
                     "regions_with_1pct": int((sizes >= 0.01 * len(scores)).sum()),
                     "non_empty": int((sizes > 0).sum())}
    return out


def decile_composition(scores: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    edges = np.quantile(scores, np.linspace(0, 1, 11)[1:-1])
    decile = np.searchsorted(edges, scores, side="right")
    return np.bincount(decile[chosen], minlength=10) / len(chosen)


def total_variation(fractions: np.ndarray) -> float:
    return float(0.5 * np.abs(fractions - 0.1).sum())


def analyse(run_dir: Path, n_random: int = 200) -> dict:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    sel = cfg["selection"]
    scores = pd.read_csv(run_dir / "scores.csv")
    score_name = sel.get("score", "effort")
    effort = scores[score_name].to_numpy(dtype=float)
    n_tokens = scores["n_response_tokens"].to_numpy(dtype=float)
    n = len(effort)
    out = {"run_dir": str(run_dir), "n": n, "score": score_name,
           "quantiles": {q: round(float(np.quantile(effort, q)), 6)
                         for q in (0.0, 0.01, 0.5, 0.99, 1.0)},
           "max_over_median": round(float(effort.max() / np.median(effort)), 2),
           "rho_length": round(float(spearmanr(effort, n_tokens)[0]), 3),
           "rho_loss": round(float(spearmanr(effort, scores["loss"])[0]), 3),
           "regions": {k: region_shares(effort, k) for k in (20, 50)}}
    rng = np.random.default_rng(0)
    ids = scores["id"].astype(str).to_numpy()
    position = {i: p for p, i in enumerate(ids)}
    out["rates"] = {}
    for folder in sorted((run_dir / "selections").glob("p*")):
        chosen_ids = (folder / "ids.txt").read_text(encoding="utf-8").split()
        chosen = np.array([position[i] for i in chosen_ids])
        m = len(chosen)
        comp = decile_composition(effort, chosen)
        random_tv = np.mean([total_variation(decile_composition(
            effort, rng.choice(n, m, replace=False))) for _ in range(n_random)])
        out["rates"][folder.name] = {
            "m": m, "mean_length": round(float(n_tokens[chosen].mean()), 2),
            "data_mean_length": round(float(n_tokens.mean()), 2),
            "length_ratio": round(float(n_tokens[chosen].mean() / n_tokens.mean()), 3),
            "deciles": [round(float(f), 3) for f in comp],
            "tv_from_uniform": round(total_variation(comp), 3),
            "random_tv_mean": round(float(random_tv), 3)}
    out["budgets"] = budgets(run_dir, sel, int(cfg.get("seed", 0)), ids, scores)
    return out


def _missing(indices):
    raise ValueError(f"verification.csv lacks {len(indices)} sample(s) the run's plan verifies: "
                     "is it this run's folder, with its config.yaml?")


def budgets(run_dir: Path, sel: dict, seed: int, ids, scores) -> dict:
    """Region table under 'paper' and 'share' at each configured rate, with the run's own
    verified target scores (its seed gives the same regions and verified samples)."""
    verification = pd.read_csv(run_dir / "verification.csv")
    position = pd.Index(ids).get_indexer(verification["id"].astype(str))
    target = dict(zip(position.tolist(), verification.iloc[:, 3].astype(float)))
    data = SelectionInput(ids=ids, scores={k: scores[k].to_numpy(dtype=float)
                                           for k in ("effort", "loss", "el2n",
                                                     "n_response_tokens")})
    result = {}
    for p in sel["pruning_rates"]:
        m = coreset_size(len(ids), p)
        rows = {}
        for rule in ("paper", "share"):
            selector = StaffSelector(_missing, regions=sel["regions"],
                                     verify_per_region=sel["verify_per_region"],
                                     normalize=sel["normalize"], budget_rule=rule,
                                     within_region=sel["within_region"],
                                     hard_prune=sel["hard_prune"],
                                     verify_small_regions=sel["verify_small_regions"],
                                     score=sel.get("score", "effort"))
            selector.target_scores.update(target)
            selector.select(data, m, seed=seed)
            for r in selector.table_:
                row = rows.setdefault(r.region, {"region": r.region, "lo": r.lo, "hi": r.hi,
                                                 "size": r.size, "V_i": round(r.factor, 3)})
                row[f"budget_{rule}"] = r.budget
                row[f"selected_{rule}"] = r.selected
        table = sorted(rows.values(), key=lambda r: r["region"])
        largest = max(table, key=lambda r: r["size"])
        mids = [(r["lo"] + r["hi"]) / 2 for r in table]
        factors = [r["V_i"] for r in table]
        # ρ is undefined (NaN, which JSON cannot hold) for fewer than 3 regions or equal V_i.
        defined = len(table) > 2 and len(set(factors)) > 1
        result[f"p{p:.2f}"] = {
            "m": m, "regions": table, "largest_region": largest,
            "rho_vi_region_score": round(float(spearmanr(mids, factors)[0]), 3)
            if defined else None}
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| run | N | max/median | ρ(effort, length) | ρ(effort, loss) | largest region "
             "K=20: equal-width / clipped / log / equal-count | same, K=50 |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in results:
        shares = [" / ".join(f"{r['regions'][k][rule]['largest_share']:.0%}"
                             for rule in EDGE_RULES) for k in (20, 50)]
        lines.append(f"| {r['name']} | {r['n']} | {r['max_over_median']} | {r['rho_length']} "
                     f"| {r['rho_loss']} | {shares[0]} | {shares[1]} |")
    lines += ["", "| run | p | m | coreset mean length / data's | decile distance from "
              "uniform (random draw's) | largest region: size, V_i, selected paper / share |",
              "|---|---:|---:|---:|---:|---|"]
    for r in results:
        for rate, info in r["rates"].items():
            b = r["budgets"].get(rate)
            big = (f"{b['largest_region']['size']}, {b['largest_region']['V_i']}, "
                   f"{b['largest_region']['selected_paper']} / "
                   f"{b['largest_region']['selected_share']}") if b else "–"
            lines.append(f"| {r['name']} | {rate[1:]} | {info['m']} | "
                         f"{info['mean_length']} / {info['data_mean_length']} "
                         f"({info['length_ratio']:.2f}×) | {info['tv_from_uniform']} "
                         f"({info['random_tv_mean']}) | {big} |")
    return "\n".join(lines) + "\n"


def figure(results: list[dict], run_dirs: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(15, 3.6 * len(results)), squeeze=False)
    for row, (r, run_dir) in enumerate(zip(results, run_dirs)):
        scores = pd.read_csv(run_dir / "scores.csv")
        effort = scores[r["score"]].to_numpy(dtype=float)
        ax = axes[row, 0]
        ax.hist(np.log10(np.maximum(effort, 1e-12)), bins=60, color="#4477aa")
        ax.set_xlabel(f"log10 {r['score']}")
        ax.set_ylabel("samples")
        ax.set_title(f"{r['name']}: score distribution (N = {r['n']})")
        ax = axes[row, 1]
        rate = sorted(r["budgets"])[-1] if r["budgets"] else None
        if rate:
            table = r["budgets"][rate]["regions"]
            mids = [(t["lo"] + t["hi"]) / 2 for t in table]
            ax.scatter(mids, [t["V_i"] for t in table],
                       s=[10 + 200 * t["size"] / r["n"] for t in table], color="#cc6677")
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xlabel("region score (midpoint); marker area ~ region size")
            ax.set_ylabel("V_i")
            ax.set_title(f"V_i by region ({rate})")
        ax = axes[row, 2]
        for i, (rate_name, info) in enumerate(sorted(r["rates"].items())):
            ax.bar(np.arange(10) + 0.8 * i / max(len(r["rates"]), 1) - 0.3,
                   info["deciles"], width=0.8 / max(len(r["rates"]), 1), label=rate_name)
        ax.axhline(0.1, color="grey", lw=0.8, ls="--", label="random draw (expected)")
        ax.set_xlabel("effort decile (0 = lowest)")
        ax.set_ylabel("share of the coreset")
        ax.set_title("coreset composition by effort decile")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", help="finished STAFF selection run folders")
    ap.add_argument("--names", help="comma-separated names for the runs (default: folders)")
    ap.add_argument("--out", required=True, help="folder for the json, md and png")
    args = ap.parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    names = args.names.split(",") if args.names else [str(d) for d in run_dirs]
    if len(names) != len(run_dirs):
        ap.error(f"--names has {len(names)} names for {len(run_dirs)} runs")
    results = []
    for name, run_dir in zip(names, run_dirs):
        for needed in ("scores.csv", "verification.csv", "config.yaml"):
            if not (run_dir / needed).is_file():
                ap.error(f"{run_dir} has no {needed}: give a finished STAFF selection run")
        results.append(dict(analyse(run_dir), name=name))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "effort_analysis.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "effort_analysis.md").write_text(markdown(results), encoding="utf-8")
    figure(results, run_dirs, out / "effort_analysis.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
