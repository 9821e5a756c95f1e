"""bench/summary.py: the headline rows follow from the per-example values of results.json."""

from __future__ import annotations

import json

import pytest

from conftest import load_bench_script


def load_script():
    return load_bench_script("summary")


def cell(method, rate, seed, loss):
    return {"method": method, "rate": rate, "seed": seed, "protocol": "epochs", "loss": loss,
            "n_train": 100}


def test_rows_and_intervals(tmp_path):
    bench = tmp_path / "toy-bench"
    bench.mkdir()
    # STAFF's loss is Random's minus exactly 0.1 on every example and seed: the interval is
    # the point; the variant is worse by 0.2 on seed 0 only (seed 1 missing: one seed).
    random = {0: [2.0, 2.2, 2.4], 1: [2.1, 2.3, 2.5]}
    results = {"cells": {}, "per_example": {}, "selection": {
        "staff/s0": {"overhead": 30.0}, "staff/s1": {"overhead": 50.0},
        "ccs/s0": {"overhead": 60.0},
        "staff:count/s0": {"overhead": 5.0, "adopted": ["train-small", "score"]}}}
    for seed, values in random.items():
        for method, shift in (("random", 0.0), ("staff", -0.1)):
            key = f"{method}/p0.90/s{seed}"
            results["cells"][key] = cell(method, 0.9, seed, sum(values) / 3 + shift)
            results["per_example"][key] = {"loss": [v + shift for v in values]}
    results["cells"]["staff:count/p0.90/s0"] = cell("staff:count", 0.9, 0, 2.4)
    results["per_example"]["staff:count/p0.90/s0"] = {"loss": [2.2, 2.4, 2.6]}
    path = bench / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "summary.md"
    load_script().main([str(path), "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| toy-bench")]
    assert len(rows) == 2
    staff = next(r for r in rows if "| STAFF |" in r)
    assert "| 0.9 |" in staff and "| 2 |" in staff
    assert "-0.1000 [-0.1000, -0.1000] *" in staff
    assert "| 40 (60) |" in staff           # mean overhead over seeds, CCS's beside it
    assert "toy-bench, 1,000" in staff       # N from a coreset of 100 at p = 0.9
    variant = next(r for r in rows if "count" in r)
    assert "| 1 |" in variant and "+0.2000 [+0.2000, +0.2000] *" in variant
    # Its stage 1 is STAFF's, timed there: marked, and the mark explained once.
    assert "| 5† (60) |" in variant and "| 40 (60) |" in staff
    assert out.read_text().count("† Some stages were taken from another") == 1


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="nothere.json: no such file"):
        load_script().main([str(tmp_path / "nothere.json")])
