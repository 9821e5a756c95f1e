"""bench/composition.py: each coreset's share of the effort deciles and length thirds."""

from __future__ import annotations

import pytest

from conftest import load_bench_script


def _bench(tmp_path):
    select = tmp_path / "bench" / "select"
    (select / "staff/s0").mkdir(parents=True)
    # 30 samples: effort 0..29, response length 30..1 (the longest have the least effort).
    rows = ["id,effort,loss,el2n,n_response_tokens"]
    rows += [f"x{i},{i},0,0,{30 - i}" for i in range(30)]
    (select / "staff/s0/scores.csv").write_text("\n".join(rows) + "\n")

    def coreset(path, ids):
        path.mkdir(parents=True)
        (path / "ids.txt").write_text("".join(f"x{i}\n" for i in ids))

    coreset(select / "staff/s0/selections/p0.90", [29, 28, 27])           # top decile only
    coreset(select / "staff-prune/s0/selections/p0.90", [0, 1, 15])       # two of the lowest
    coreset(select / "staff-prune/s1/selections/p0.90", [0, 14, 15])      # one of the lowest
    coreset(select / "baselines/s2/selections/ccs/p0.90", [10, 11, 12])
    coreset(select / "staff/s0/selections/p0.50", list(range(15)))        # another rate
    return tmp_path / "bench"


def test_shares_per_method_and_seed_range(tmp_path):
    text = load_bench_script("composition").table(_bench(tmp_path), 0.9)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
            if line.startswith("| ")}
    assert set(rows) >= {"staff", "staff:prune", "ccs"}
    # STAFF took only the three highest-effort samples: the shortest responses (1, 2, 3 tokens).
    assert "| 0% | 100% | 100% / 0% / 0% | 2.0 |" in rows["staff"]
    # Two seeds: the lowest decile (x0..x2) 2/3 and 1/3, mean 50% with its range.
    assert "| 2 | 50% [33%–67%] | 0% |" in rows["staff:prune"]
    assert "| 1 | 0% | 0% | 0% / 100% / 0% | 19.0 |" in rows["ccs"]
    assert "p = 0.9" in text and "N = 30" in text


def test_unknown_ids_and_methods_are_named(tmp_path):
    script = load_bench_script("composition")
    bench = _bench(tmp_path)
    with pytest.raises(SystemExit, match="--methods: no coreset at p = 0.9 for staff:count"):
        script.table(bench, 0.9, ["staff", "staff:count"])
    (bench / "select/staff/s0/selections/p0.90/ids.txt").write_text("x1\nnot-here\n")
    with pytest.raises(SystemExit, match="'not-here' is not in the reference scores"):
        script.table(bench, 0.9)
    with pytest.raises(SystemExit, match="no select/ folder"):
        script.table(tmp_path, 0.9)
