"""bench/effort_analysis.py on a hand-made run folder: the numbers it reports are the ones the
scores imply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from conftest import load_bench_script


def load_script():
    return load_bench_script("effort_analysis")


def make_run(folder: Path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    n_tokens = rng.integers(5, 80, n)
    effort = n_tokens ** -0.7 * rng.lognormal(0, 0.2, n)   # shorter responses, more effort
    ids = [f"s{i}" for i in range(n)]
    pd.DataFrame({"id": ids, "effort": effort, "loss": rng.random(n), "el2n": rng.random(n),
                  "n_response_tokens": n_tokens}).to_csv(folder / "scores.csv", index=False)
    sel = {"pruning_rates": [0.9], "regions": 10, "verify_per_region": 3, "normalize": "mean",
           "within_region": "random", "hard_prune": 0.0, "verify_small_regions": True,
           "score": "effort"}
    (folder / "config.yaml").write_text(yaml.safe_dump({"selection": sel, "seed": 3}))
    # The verification a run with seed 3 makes (the target doubles the small model's effort).
    from staff.selection.base import SelectionInput
    from staff.selection.staff import StaffSelector

    selector = StaffSelector(lambda idx: 2 * effort[idx], regions=10, verify_per_region=3)
    selector.prepare(SelectionInput(ids=np.array(ids), scores={"effort": effort}), seed=3)
    verified = sorted(selector.target_scores)
    pd.DataFrame({"id": [ids[i] for i in verified], "region": 0,
                  "small_effort": effort[verified],
                  "target_effort": 2 * effort[verified]}).to_csv(folder / "verification.csv",
                                                                  index=False)
    top = np.argsort(-effort)[:40]                      # a coreset of the top decile only
    (folder / "selections" / "p0.90").mkdir(parents=True)
    (folder / "selections" / "p0.90" / "ids.txt").write_text("".join(f"{ids[i]}\n" for i in top))
    return effort, n_tokens, top


def test_effort_analysis_reports_what_the_scores_imply(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    effort, n_tokens, top = make_run(run)
    load_script().main([str(run), "--names", "toy", "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "effort_analysis.json").read_text())[0]
    assert result["name"] == "toy" and result["n"] == 400
    assert result["rho_length"] < -0.8
    rate = result["rates"]["p0.90"]
    assert rate["deciles"][9] == 1.0 and rate["tv_from_uniform"] == 0.9   # all in the top one
    assert 0 < rate["random_tv_mean"] < 0.3
    assert rate["length_ratio"] < 0.6          # the top-effort coreset has short responses
    assert rate["mean_length"] == round(float(n_tokens[top].mean()), 2)
    budget = result["budgets"]["p0.90"]
    assert budget["m"] == 40
    # The target is the small model doubled: V_i is the same everywhere, so its ρ with the
    # region score is undefined, written as null (NaN made the JSON invalid).
    assert budget["rho_vi_region_score"] is None
    assert "NaN" not in (tmp_path / "out" / "effort_analysis.json").read_text()
    for rule in ("paper", "share"):
        assert sum(r[f"selected_{rule}"] for r in budget["regions"]) == 40
    shares = result["regions"]["20"]
    assert shares["equal-count"]["largest_share"] <= 0.06
    assert (tmp_path / "out" / "effort_analysis.png").stat().st_size > 10_000
    assert "| toy | 400 |" in (tmp_path / "out" / "effort_analysis.md").read_text()
