"""A coreset written as the source file's own lines, without parsing the data again.

Picking new pruning rates from stored scores must be quick at millions of rows (issue 5: 8
rates in under 10 s at 1M). Reading, validating and formatting a million JSON rows takes
longer than that, and a coreset only needs the chosen rows, unchanged. For a JSON Lines file,
row i is the i-th line that holds a JSON object, so the chosen rows are byte ranges of the
file: find the line breaks once (numpy), then copy the ranges. Rows come out exactly as the
user wrote them.

This is only used for a file that already parsed into exactly those rows (the run's earlier
stages read it with the same fingerprint); anything else, such as a JSON list, a single
pretty-printed object or a CSV file, returns None and the caller serialises parsed rows.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import numpy as np


class SourceLines:
    """The rows of a JSON Lines file, as (start, end) byte offsets of their lines."""

    def __init__(self, data: bytes, starts: np.ndarray, ends: np.ndarray, line_of_row: np.ndarray):
        self._data = memoryview(data)
        self._starts, self._ends, self._line_of_row = starts, ends, line_of_row

    @classmethod
    def open(cls, path: str | Path, n_rows: int, max_rows: int | None) -> SourceLines | None:
        """Index ``path`` if its first ``n_rows`` rows are its first ``n_rows`` object lines;
        else None. ``max_rows`` is the data's ``max_samples`` (the file may hold more)."""
        path = Path(path).expanduser()
        if path.suffix.lower() not in (".jsonl", ".json") or not path.is_file() or n_rows < 2:
            return None  # a single row may be a pretty-printed object spanning lines
        data = path.read_bytes()
        offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        if data[offset:].lstrip()[:1] == b"[":
            return None  # a JSON list of objects, not one object per line
        raw = np.frombuffer(data, dtype=np.uint8)
        breaks = np.flatnonzero(raw == ord("\n"))
        starts = np.concatenate(([offset], breaks + 1))
        ends = np.concatenate((breaks, [len(data)]))
        # Every row is a JSON object, so its line holds a "{"; a blank line (the reader skips
        # those, including lines of Unicode spaces) holds none. Line of each "{", deduplicated:
        lines = np.searchsorted(breaks, np.flatnonzero(raw == ord("{")))
        if len(lines):
            lines = lines[np.concatenate(([True], np.diff(lines) != 0))]
        kept = len(lines) if max_rows is None else min(len(lines), max_rows)
        if kept != n_rows:
            return None  # not one object per line (e.g. pretty-printed objects)
        return cls(data, starts, ends, lines[:n_rows])

    def subset(self, rows: np.ndarray, ids=None, id_field: str = "id") -> bytes:
        """The given rows (ascending), one line each, in file order. With ``ids`` (the rows'
        sample ids), a row whose id is its row number and which lacks ``id_field`` gets it
        added, so that every coreset row names its id."""
        rows = np.asarray(rows, dtype=np.int64)
        if ids is not None and len(rows):
            numbered = np.flatnonzero(np.asarray(ids).astype(str) == (rows + 1).astype(str))
            if len(numbered):
                return self._with_ids(rows, np.asarray(ids), numbered, id_field)
        lines = self._line_of_row[rows]
        if not len(lines):
            return b""
        # Neighbouring lines are one contiguous range: copy runs, not single lines.
        cut = np.flatnonzero(np.diff(lines) != 1) + 1
        first = lines[np.concatenate(([0], cut))]
        last = lines[np.concatenate((cut - 1, [len(lines) - 1]))]
        data = self._data
        return b"\n".join(data[a:b] for a, b in zip(self._starts[first].tolist(),
                                                     self._ends[last].tolist())) + b"\n"


    def _with_ids(self, rows, ids, numbered, id_field: str) -> bytes:
        """Like ``subset``, with ``id_field`` added to the rows at positions ``numbered`` that
        lack it (only those lines are parsed; the others are copied unchanged)."""
        data, out = self._data, []
        lines = self._line_of_row[rows]
        fix = set(numbered.tolist())
        for k, (a, b) in enumerate(zip(self._starts[lines].tolist(), self._ends[lines].tolist())):
            line = bytes(data[a:b])
            if k in fix:
                row = json.loads(line)
                if row.get(id_field) in (None, ""):
                    line = json.dumps(with_id(row, id_field, str(ids[k])),
                                      ensure_ascii=False).encode("utf-8")
            out.append(line)
        return b"\n".join(out) + b"\n"


def with_id(row: dict, id_field: str, sid: str) -> dict:
    """The row with its sample id in ``id_field`` (first), when it has none of its own."""
    if row.get(id_field) not in (None, ""):
        return row
    return {id_field: sid, **{k: v for k, v in row.items() if k != id_field}}


def text_lines(values) -> list[str]:
    """Text lines for ``"".join``: one per value (fast at millions of ids)."""
    return ["\n".join(values.tolist()), "\n"] if len(values) else []


class ParsedRows:
    """The fallback for sources that are not JSON Lines: each parsed row serialised once,
    however many pruning rates are written."""

    def __init__(self, rows: list[dict]):
        self.rows = rows  # with their ids (``with_id``): every coreset row names its id
        self._lines: list[str] | None = None

    def subset(self, indices, ids=None, id_field: str = "id") -> str:
        if self._lines is None:
            self._lines = np.array([json.dumps(r, ensure_ascii=False, default=_plain)
                                    for r in self.rows], dtype=object)
        return "".join(text_lines(self._lines[np.asarray(indices, dtype=np.int64)]))


def _plain(value):
    """numpy scalars and the like, as JSON."""
    return value.item() if hasattr(value, "item") else str(value)
