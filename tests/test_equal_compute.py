"""bench/equal_compute.py (staff.bench.cost): selection seconds become target steps at the bench's own rate, and a
costlier row that a cheaper one beats by more than their seed spread is marked dominated."""

from __future__ import annotations

import json

import pytest

from conftest import load_bench_script


def cell(method, rate, seed, loss, steps):
    return {"method": method, "rate": rate, "seed": seed, "protocol": "epochs", "loss": loss,
            "steps": steps}


def results_file(tmp_path, cells, selection):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"cells": {f"{c['method']}/p{c['rate']:.2f}/s{c['seed']}"
                                          f"/{c['protocol']}": c
                                          for c in cells},
                                "selection": selection}))
    return path


def test_costs_in_target_steps_and_dominance(tmp_path):
    cells = [cell("random", 0.9, s, 2.60 + 0.01 * s, 10) for s in (0, 1)]
    cells += [cell("random", 0.8, s, 2.30 + 0.01 * s, 20) for s in (0, 1)]
    cells += [cell("staff", 0.9, s, 2.55 + 0.01 * s, 10) for s in (0, 1)]
    cells += [cell("ccs", 0.8, 0, 2.31, 20)]
    # train-target: 200 s for the full data's 100 steps (10 steps at p = 0.9): 2 s a step.
    # STAFF's stage 1 was timed twice (copied to seed 1 from a loaded run): the least counts.
    selection = {"ccs/s0": {"overhead": 300.0, "timings": {"train-target": 200.0,
                                                           "score-target": 100.0}},
                 "staff/s0": {"overhead": 100.0}, "staff/s1": {"overhead": 400.0}}
    path = results_file(tmp_path, cells, selection)
    out = tmp_path / "t.md"
    load_bench_script("equal_compute").main([str(path), "--out", str(out)])
    text = out.read_text()
    assert "One target step = 2.00 s" in text and "fine-tuning is 100 steps" in text
    rows = {tuple(r.split(" | ")[:2]): r for r in text.splitlines() if r.startswith("| ")
            and r[2:3].isalpha() and not r.startswith("| Method")}
    staff = rows[("| STAFF", "0.90")]
    assert "| 50 | 10 | 60 | 0.60× |" in staff            # 100 s / 2 s + 10 steps
    assert "Random at p = 0.80 (20 steps, 2.305)" in staff  # cheaper and better by > both sds
    assert rows[("| Random", "0.90")].endswith("|  |")      # nothing cheaper beats it
    # CCS at 0.8 costs more than Random at 0.8 and is worse, but within their spread.
    assert rows[("| CCS", "0.80")].endswith("|  |")
    # Rows by total cost.
    order = [k[0][2:] for k in rows]
    assert order.index("Random") < order.index("STAFF") < order.index("CCS")


def test_the_full_data_cell_sets_the_scale_and_can_dominate(tmp_path):
    # 45 pairs at p = 0.9 in batches of 8 is 6 steps, 60 for "all" by scaling: the full-data
    # cell's own 57 steps are taken instead. A selection costing more than it and worse is
    # dominated by it.
    cells = [cell("random", 0.9, 0, 2.60, 6), cell("ccs", 0.9, 0, 2.58, 6),
             {**cell("full", 0.0, 0, 1.90, 57), "rate": 0.0}]
    selection = {"ccs/s0": {"overhead": 114.0, "timings": {"train-target": 114.0}}}
    text = load_bench_script("equal_compute").table(
        json.loads(results_file(tmp_path, cells, selection).read_text()))
    assert "One target step = 2.00 s" in text and "fine-tuning is 57 steps" in text
    ccs = next(r for r in text.splitlines() if r.startswith("| CCS"))
    assert "| 57 | 6 | 63 | 1.11× |" in ccs and "Full data (p = 0) at p = 0.00 (57 steps" in ccs
    full = next(r for r in text.splitlines() if r.startswith("| Full data"))
    assert "| 0.00 | 0 | 57 | 57 | 1.00× |" in full


def test_a_steps_protocol_cell_is_a_row_of_its_own(tmp_path):
    # The steps protocol trains the full data's 57 steps over the coreset: its row costs the
    # selection plus 57 steps, apart from the same method's epochs row.
    cells = [cell("staff", 0.9, 0, 2.58, 6), {**cell("staff", 0.9, 0, 2.20, 57),
                                                "protocol": "steps", "rouge_l": 33.3},
             {**cell("full", 0.0, 0, 1.90, 57), "rate": 0.0}]
    selection = {"ccs/s0": {"overhead": 114.0, "timings": {"train-target": 114.0}},
                 "staff/s0": {"overhead": 114.0}}
    rows = [r for r in load_bench_script("equal_compute").table(
        json.loads(results_file(tmp_path, cells, selection).read_text())).splitlines()
        if r.startswith("| STAFF")]
    assert len(rows) == 2
    assert rows[0].startswith("| STAFF | 0.90 | 57 | 6 | 63 | 1.11× |")
    assert rows[1].startswith("| STAFF (steps) | 0.90 | 57 | 57 | 114 | 2.00× | 2.200 ± 0.000 "
                              "(1) | 33.3 (1) |")
    assert "| 2.580 ± 0.000 (1) | – |" in rows[0]          # not decoded
    assert "Full data (p = 0) at p = 0.00" in rows[1]


def test_needs_a_baselines_train_target(tmp_path):
    path = results_file(tmp_path, [cell("random", 0.9, 0, 2.6, 10)], {})
    with pytest.raises(SystemExit, match="results.json: no baseline selection"):
        load_bench_script("equal_compute").main([str(path)])
