"""Files in the run folder appear whole, and tables read back exactly as written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from staff.runs.folder import read_table, write_table


def test_ids_that_look_like_missing_values_or_numbers_survive(tmp_path):
    ids = ["NA", "null", "nan", "", "007", "1e3", "None", "N/A"]
    frame = pd.DataFrame({"id": ids, "effort": [1.0, np.nan, np.inf, 2.0, 3.0, 4.0, 5.0, 6.0]})
    write_table(tmp_path / "t.csv", frame)
    back = read_table(tmp_path / "t.csv")
    assert back["id"].tolist() == ids
    assert np.isnan(back["effort"][1]) and np.isinf(back["effort"][2])
    assert back["effort"].dtype == np.float64


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    # One writer serves run files, JSON Lines and score shards: a failure inside the ``with``
    # (here an exception after half the bytes) must leave the old file whole and nothing beside it.
    from staff.runs.folder import atomic_open, write_atomic

    path = tmp_path / "sub" / "scores.npz"
    write_atomic(path, b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(path) as fh:
            fh.write(b"new, half of it")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["scores.npz"]
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write("é")
    assert path.read_text(encoding="utf-8") == "é"
