"""bench/strata.py: per-stratum paired differences that follow from constructed values."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import load_bench_script



def load_script():
    return load_bench_script("strata")


def test_a_gain_on_short_references_and_a_loss_on_long_ones_are_told_apart(tmp_path):
    st = load_script()
    n = 30
    words = np.r_[np.full(10, 5), np.full(10, 20), np.full(10, 40)]
    order = np.random.default_rng(0).permutation(n)  # test rows in any order of length
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"ref": " ".join(["w"] * w)}) + "\n"
                            for w in words[order]))
    rng = np.random.default_rng(1)
    effect = np.select([words[order] == 5, words[order] == 40], [-0.3, 0.2], 0.0)
    per = {}
    for seed in range(3):
        base = rng.normal(2.0, 0.5, n)
        per[f"random/p0.90/s{seed}"] = {"loss": base.tolist()}
        per[f"staff/p0.90/s{seed}"] = {"loss": (base + effect
                                                + rng.normal(0, 0.01, n)).tolist()}
    per["staff/p0.95/s0"] = {"loss": [9.0] * n}  # another rate: not mixed in
    results = {"per_example": per}
    rows = st.strata_table(results, lambda k: st.reference_lengths(test, "ref", k),
                           "staff", "random", 0.9, 3, n_boot=1000)
    assert [(r["stratum"], r["words"], r["n"]) for r in rows] == [
        (1, (5, 5), 10), (2, (20, 20), 10), (3, (40, 40), 10)]
    assert rows[0]["mean"] == pytest.approx(-0.3, abs=0.02) and rows[0]["excludes_zero"]
    assert rows[1]["mean"] == pytest.approx(0.0, abs=0.02)
    assert rows[2]["mean"] == pytest.approx(0.2, abs=0.02) and rows[2]["excludes_zero"]
    assert all(r["seeds"] == 3 for r in rows)
    table = st.markdown(rows, "staff", "random", 0.9)
    assert re.search(r"\| loss \| 5–5 \| 10 \| -0\.(29|30)\d\d \[-0\.\d+, -0\.\d+\] \* \| 3 \|",
                     table) and table.count(" *") == 2
    with pytest.raises(SystemExit, match="no field 'summary'"):
        st.reference_lengths(test, "summary", 5)


def test_a_bench_folder_stands_for_its_results_json_and_a_missing_one_is_named(tmp_path, capsys):
    st = load_script()
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"ref": " ".join(["w"] * (1 + i % 7))}) + "\n"
                            for i in range(12)))
    per = {f"{m}/p0.90/s0": {"loss": [2.0 + (m == "staff") * 0.1] * 12} for m in ("staff", "random")}
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "results.json").write_text(json.dumps({"per_example": per}))
    st.main([str(bench), str(test), "--field", "ref"])
    assert "+0.1000" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"nowhere: no such file"):
        st.main([str(tmp_path / "nowhere"), str(test), "--field", "ref"])


def test_the_steps_protocol_is_compared_apart_and_across(tmp_path, capsys):
    st = load_script()
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"ref": "w " * (1 + i % 5)}) + "\n" for i in range(10)))
    per = {"staff/p0.90/s0": {"loss": [2.5] * 10}, "random/p0.90/s0": {"loss": [2.6] * 10},
           "staff/p0.90/s0/steps": {"loss": [2.0] * 10},
           "random/p0.90/s0/steps": {"loss": [2.3] * 10}}
    (tmp_path / "results.json").write_text(json.dumps({"per_example": per}))
    run = [str(tmp_path / "results.json"), str(test), "--field", "ref", "--strata", "1"]
    st.main(run)
    out = capsys.readouterr().out
    assert "staff − random at p = 0.9" in out and "-0.1000" in out  # the epochs cells only
    st.main(run + ["--protocol", "steps"])
    out = capsys.readouterr().out
    assert "staff (steps) − random (steps)" in out and "-0.3000" in out
    st.main(run + ["--method", "random", "--protocol", "steps", "--baseline-protocol", "epochs"])
    out = capsys.readouterr().out
    assert "random (steps) − random at p = 0.9" in out and "-0.3000" in out
