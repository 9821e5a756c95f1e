"""Coreset rows copied from the source file's own lines (fast `pick` at millions of rows)."""

from __future__ import annotations

import codecs
import json

import numpy as np
import pytest

from staff.data.source_lines import SourceLines
from staff.data.sources import _read_json


def rows_of(path):
    return _read_json(path)


def check_subset(path, n, max_rows=None):
    lines = SourceLines.open(path, n, max_rows)
    assert lines is not None
    rows = rows_of(path)[:n]
    for chosen in ([0], [n - 1], list(range(n)), list(range(0, n, 2)), [1, 2, 3, n - 1][: n]):
        chosen = sorted(set(chosen))
        text = lines.subset(np.array(chosen)).decode("utf-8")
        assert text.endswith("\n")
        assert [json.loads(x) for x in text.splitlines()] == [rows[i] for i in chosen]
    assert lines.subset(np.array([], dtype=np.int64)) == b""


def test_rows_are_the_files_own_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    raw = ['{"id": "a",  "x": "one"}', '{"x": "{{ braces }}", "id": "b"}', '{"id":"c","x":"ü"}',
           '{"id": "d", "x": "four"}']
    path.write_text("\n".join(raw) + "\n", encoding="utf-8")
    lines = SourceLines.open(path, 4, None)
    # Bytes exactly as written: spacing and key order kept, unlike a re-serialisation.
    assert lines.subset(np.array([0, 2, 3])) == ("\n".join([raw[0], raw[2], raw[3]]) + "\n").encode()
    check_subset(path, 4)


def test_blank_lines_bom_crlf_and_no_final_newline(tmp_path):
    path = tmp_path / "d.jsonl"
    body = '{"id": 1}\r\n\r\n   \n{"id": 2}\n\u3000\u2028\n{"id": 3}\r\n\n{"id": 4}'
    path.write_bytes(codecs.BOM_UTF8 + body.encode("utf-8"))
    assert len(rows_of(path)) == 4  # the reader skips blank lines, Unicode spaces included
    check_subset(path, 4)
    lines = SourceLines.open(path, 4, None)
    assert lines.subset(np.array([0])).startswith(b'{"id": 1}')  # no BOM in the coreset


def test_max_samples_takes_the_first_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(10)))
    check_subset(path, 6, max_rows=6)
    assert SourceLines.open(path, 6, None) is None  # 10 rows in the file, 6 expected


@pytest.mark.parametrize("text", [
    '[{"id": 1}, {"id": 2}]',                       # a JSON list
    '[\n{"id": 1},\n{"id": 2}\n]\n',                # a JSON list, one item per line
])
def test_not_one_object_per_line_falls_back(tmp_path, text):
    path = tmp_path / "d.json"
    path.write_text(text)
    assert SourceLines.open(path, 2, None) is None


def test_pretty_printed_single_object_and_other_files_fall_back(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{\n  "id": 1,\n  "x": {"y": 2}\n}\n')
    assert SourceLines.open(path, 1, None) is None
    csv = tmp_path / "d.csv"
    csv.write_text("id,x\n1,a\n2,b\n")
    assert SourceLines.open(csv, 2, None) is None
