"""Rows -> a JSON Lines file (UTF-8), written atomically."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_jsonl_atomic(rows: list[dict], path) -> None:
    """Write JSON Lines (UTF-8) to a temp file in the same folder, then rename over ``path``:
    readers never see a half-written file, and a crash leaves the old file intact."""
    path = Path(path)
    # The temp name ends in the writer's pid, as runfolder.write_atomic's does, so that a run
    # folder can tell the leftovers of a killed writer from a live one's.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # A failed write (a full disk) names no file by itself.
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
