"""Rows -> a JSON Lines file (UTF-8), written atomically."""

from __future__ import annotations

import json

from staff.runs.folder import atomic_open


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_jsonl_atomic(rows: list[dict], path) -> None:
    """Write JSON Lines (UTF-8) to a temp file in the same folder, then rename over ``path``:
    readers never see a half-written file, and a crash leaves the old file intact."""
    try:
        with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
    except OSError as err:
        # A failed write (a full disk) names no file by itself.
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
