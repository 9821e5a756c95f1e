"""Tables in the run folder read back exactly as written."""

from __future__ import annotations

import numpy as np
import pandas as pd

from staff.runs.folder import read_table, write_table


def test_ids_that_look_like_missing_values_or_numbers_survive(tmp_path):
    ids = ["NA", "null", "nan", "", "007", "1e3", "None", "N/A"]
    frame = pd.DataFrame({"id": ids, "effort": [1.0, np.nan, np.inf, 2.0, 3.0, 4.0, 5.0, 6.0]})
    write_table(tmp_path / "t.csv", frame)
    back = read_table(tmp_path / "t.csv")
    assert back["id"].tolist() == ids
    assert np.isnan(back["effort"][1]) and np.isinf(back["effort"][2])
    assert back["effort"].dtype == np.float64
