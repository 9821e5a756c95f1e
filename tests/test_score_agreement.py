"""bench/score_agreement.py: agreement figures that follow from hand-made scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import load_bench_script


def load_script():
    return load_bench_script("score_agreement")


def write_run(folder: Path, ids, effort) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame({"id": ids, "effort": effort}).to_csv(folder / "scores.csv", index=False)
    return folder


def test_same_reversed_and_noisy_scores(tmp_path):
    sa = load_script()
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(1, 1001)]
    effort = rng.lognormal(0, 0.3, 1000)
    ref = write_run(tmp_path / "ref", ids, effort)
    # The same scores in another row order: matched by id, so full agreement.
    order = rng.permutation(1000)
    same = write_run(tmp_path / "same", [ids[i] for i in order], effort[order])
    flipped = write_run(tmp_path / "flipped", ids, -effort)
    noisy = write_run(tmp_path / "noisy", ids, effort * rng.lognormal(0, 0.2, 1000))
    out = tmp_path / "agreement.json"
    sa.main([str(ref), str(same), str(flipped), str(noisy), "--names", "same,flipped,noisy",
             "--k", "20", "--out", str(out)])
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["same"]["spearman"] == 1.0 and rows["same"]["ari"] == 1.0
    assert rows["same"]["lowest_decile_jaccard"] == 1.0
    assert rows["flipped"]["spearman"] == -1.0
    # Reversed scores swap the extreme deciles: none of the lowest is among the lowest.
    assert rows["flipped"]["lowest_decile_jaccard"] == 0.0
    assert rows["flipped"]["highest_decile_jaccard"] == 0.0
    noisy_row = rows["noisy"]
    assert 0.5 < noisy_row["spearman"] < 1.0
    # Noise moves samples across region edges, but far less than chance does.
    assert noisy_row["ari_chance"] < 0.05 < noisy_row["ari"] < 1.0


def test_other_samples_fail_naming_the_run(tmp_path):
    sa = load_script()
    ref = write_run(tmp_path / "ref", ["a", "b", "c"], [1.0, 2.0, 3.0])
    other = write_run(tmp_path / "other", ["a", "b", "d"], [1.0, 2.0, 3.0])
    with pytest.raises(SystemExit, match="draft: 2 sample id"):
        sa.main([str(ref), str(other), "--names", "draft"])


def test_a_subset_is_compared_on_its_own_samples(tmp_path):
    sa = load_script()
    ids = [f"s{i}" for i in range(40)]
    ref = pd.Series(np.arange(40.0), index=ids)
    # The subset agrees with the reference in order; the reference's other samples would not.
    sub = pd.Series(np.arange(20.0) * 3, index=ids[::2])
    row = sa.agreement(ref, sub, 4, "probe")
    assert row["n"] == 20 and row["spearman"] == 1.0 and row["ari"] == 1.0


def test_missing_column_is_named(tmp_path):
    sa = load_script()
    ref = write_run(tmp_path / "ref", ["a", "b"], [1.0, 2.0])
    with pytest.raises(SystemExit, match=r"scores.csv: no column 'loss'"):
        sa.main([str(ref), str(ref), "--score", "loss"])


def test_edges_cut_the_regions_as_the_selector_would(tmp_path):
    """Equal-count regions hold N/K samples each whatever the score's shape; equal-width ones
    over a heavy tail put nearly everything in the lowest region. A monotone transform of the
    scores keeps equal-count regions and moves equal-width ones."""
    sa = load_script()
    rng = np.random.default_rng(1)
    effort = rng.lognormal(0, 1.5, 2000)   # heavy-tailed
    ref = pd.Series(effort, index=[f"s{i}" for i in range(2000)])
    logged = np.log(ref)                   # same ranks, other widths
    width = sa.agreement(ref, logged, 10, "log", edges="equal-width")
    count = sa.agreement(ref, logged, 10, "log", edges="equal-count")
    assert width["spearman"] == count["spearman"] == 1.0
    assert count["ari"] == 1.0 and count["edges"] == "equal-count"
    assert width["ari"] < 0.5
    assert np.bincount(sa.region_labels(effort, 10, "equal-count")).tolist() == [200] * 10
    with pytest.raises(SystemExit):
        sa.main([str(tmp_path), str(tmp_path), "--edges", "sideways"])


def test_the_ari_expected_from_rho_matches_scores_that_share_only_their_ranks(tmp_path):
    """Two scorings made as a Gaussian pair (nothing in common but the correlation) have the
    ARI that ρ alone implies; a scoring equal to the reference has ARI 1 and expects 1."""
    sa = load_script()
    rng = np.random.default_rng(2)
    x = rng.standard_normal(3000)
    y = 0.8 * x + 0.6 * rng.standard_normal(3000)
    ids = [f"s{i}" for i in range(3000)]
    ref = pd.Series(np.exp(x), index=ids)          # skewed, like effort
    other = pd.Series(np.exp(0.5 * y), index=ids)
    for edges in ("equal-width", "equal-count"):
        row = sa.agreement(ref, other, 20, "pair", edges=edges)
        assert 0.02 < row["ari"] < 0.5
        assert row["ari_expected"] == pytest.approx(row["ari"], abs=0.03)
        same = sa.agreement(ref, ref, 20, "same", edges=edges)
        assert same["ari"] == same["ari_expected"] == 1.0
    # Fine regions disagree a lot even at high rank agreement: the curve rises with ρ.
    a = np.exp(x)
    curve = [sa.ari_expected(a, a, rho, 20, "equal-count") for rho in (0.75, 0.9, 0.99)]
    assert curve[0] < curve[1] < curve[2] < 1.0 and curve[0] < 0.1
