"""bench/score_checkpoint.py: a run's samples scored on another adapter of its small model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from staff.config import load_config
from staff.pipeline import Pipeline
from staff.runs.layout import SCORES, adapter_dir

from conftest import load_bench_script
from test_pipeline import tiny_config


def load_script():
    return load_bench_script("score_checkpoint")


def test_the_runs_own_adapter_gives_its_scores_and_the_probe_is_early_stops(
        tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir):
    sc = load_script()
    result = Pipeline(load_config(tiny_config(tmp_path, alpaca_file, tiny_model_dir,
                                              tiny_target_dir)),
                      show_progress=False).run_all()
    run = result.run_dir
    # A checkpoint-like folder (adapter/ inside), as copied aside while stage 1 ran.
    checkpoint = tmp_path / "step5"
    shutil.copytree(run / adapter_dir("small"), checkpoint / "adapter")
    out = tmp_path / "out"
    written = sc.score(run, [checkpoint], out)
    assert written == [out / "step5" / SCORES]
    mine = pd.read_csv(written[0], dtype={"id": str}).set_index("id")
    theirs = pd.read_csv(run / SCORES, dtype={"id": str}).set_index("id")
    assert list(mine.index) == list(theirs.index)
    np.testing.assert_allclose(mine["effort"], theirs["effort"], rtol=1e-5)
    np.testing.assert_array_equal(mine["n_response_tokens"], theirs["n_response_tokens"])

    probe = sc.score(run, [checkpoint], tmp_path / "probe", probe=12)
    ids = pd.read_csv(probe[0], dtype={"id": str})["id"]
    assert len(ids) == 12 and set(ids) <= set(theirs.index)
    with pytest.raises(SystemExit, match="no adapter_config.json"):
        sc.score(run, [tmp_path / "nothing"], out)

    # Another scope: the last layer's LoRA tensors only, a part of the full sum of squares.
    last = sc.score(run, [checkpoint], tmp_path / "last", scope="last-layer")
    part = pd.read_csv(last[0], dtype={"id": str}).set_index("id").loc[theirs.index]
    assert (part["effort"] < theirs["effort"]).all() and (part["effort"] > 0).all()
    np.testing.assert_allclose(part["loss"], theirs["loss"], rtol=1e-5)
    timing = json.loads((last[0].parent / "timing.json").read_text())
    assert timing["scope"] == "last-layer" and timing["samples"] == len(theirs)


def test_settle_curve_compares_consecutive_score_files(tmp_path):
    sc = load_script()
    ids = [f"s{i}" for i in range(8)]
    base = np.arange(8.0)
    files = []
    for name, effort in [("a", base), ("b", base[::-1]), ("c", base[::-1] * 2)]:
        path = tmp_path / name / SCORES
        path.parent.mkdir()
        order = np.random.default_rng(len(files)).permutation(8)  # rows in any order
        pd.DataFrame({"id": np.array(ids)[order], "effort": effort[order]}).to_csv(path,
                                                                                   index=False)
        files.append(path)
    curve = sc.settle_curve(files)
    assert [(r["from"], r["to"]) for r in curve] == [("a", "b"), ("b", "c")]
    assert curve[0]["rho"] == pytest.approx(-1.0) and curve[1]["rho"] == pytest.approx(1.0)
