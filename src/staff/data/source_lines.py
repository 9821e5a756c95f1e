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

    def subset(self, rows: np.ndarray) -> bytes:
        """The given rows (ascending), one line each, in file order."""
        lines = self._line_of_row[np.asarray(rows, dtype=np.int64)]
        if not len(lines):
            return b""
        # Neighbouring lines are one contiguous range: copy runs, not single lines.
        cut = np.flatnonzero(np.diff(lines) != 1) + 1
        first = lines[np.concatenate(([0], cut))]
        last = lines[np.concatenate((cut - 1, [len(lines) - 1]))]
        data = self._data
        return b"\n".join(data[a:b] for a, b in zip(self._starts[first].tolist(),
                                                     self._ends[last].tolist())) + b"\n"


def text_lines(values) -> list[str]:
    """Text lines for ``"".join``: one per value (fast at millions of ids)."""
    return ["\n".join(values.tolist()), "\n"] if len(values) else []


class ParsedRows:
    """The fallback for sources that are not JSON Lines: each parsed row serialised once,
    however many pruning rates are written."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self._lines: list[str] | None = None

    def subset(self, indices) -> str:
        if self._lines is None:
            self._lines = np.array([json.dumps(r, ensure_ascii=False, default=_plain)
                                    for r in self.rows], dtype=object)
        return "".join(text_lines(self._lines[np.asarray(indices, dtype=np.int64)]))


def _plain(value):
    """numpy scalars and the like, as JSON."""
    return value.item() if hasattr(value, "item") else str(value)
