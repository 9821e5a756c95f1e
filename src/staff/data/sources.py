"""Read a data source into a list of plain row dicts, in the source's order.

A source is a JSON Lines / JSON / CSV / Parquet file, a folder written by
``datasets.save_to_disk``, a hub dataset name, or ``demo`` (the generated demo set). Every
problem with the data raises ``DataError`` with one line naming the file, the line (or row) and
what is wrong, so a user can open the file at that spot.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

from staff.config import DataConfig

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# A hub id is "name" or "owner/name" of word characters, dots and dashes; anything else that does
# not exist on disk (./x, /abs/x, a/b/c, x.jsonl) was meant as a path and is reported as missing
# instead of being sent to the hub, where it would fail with a confusing network error.
_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.lower().endswith(FILE_SUFFIXES)


class DataError(ValueError):
    """Bad or unreadable data; the one-line message names the file, line/row and field."""


def load_rows(cfg: DataConfig) -> list[dict]:
    """Rows of ``cfg.path`` as plain dicts in original order, at most ``cfg.max_samples``."""
    if cfg.path == "demo":
        from staff.data.demo import make_demo_rows

        rows = make_demo_rows(cfg.demo_size)
    else:
        path = Path(cfg.path).expanduser()
        if path.is_file():
            rows = _read_file(path)
        elif path.is_dir() and _is_saved_dataset(path):
            rows = _read_saved(path, cfg.split, cfg.max_samples)
        elif path.is_dir() or looks_like_hub_id(cfg.path):
            # A plain folder of data files also goes through load_dataset, which reads those.
            rows = _read_hub(cfg.path, cfg.hub_config, cfg.split, cfg.max_samples)
        elif path.exists():  # /dev/null, a FIFO, a socket: not data we can read
            raise DataError(f"{cfg.path}: not a regular file or folder")
        else:
            raise DataError(f"{cfg.path}: no such file or folder")
    if cfg.max_samples is not None:
        rows = rows[:cfg.max_samples]
    log.info("read %d rows from %s", len(rows), cfg.path)
    return rows


# ----------------------------------------------------------------------------- files

def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix == ".parquet":
        rows = _read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        rows = _read_json(path)
    else:
        raise DataError(f"{path}: unknown file type '{suffix}' (use .jsonl, .json, .csv or "
                        ".parquet)")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a leading BOM is dropped); bad bytes -> DataError with their line number."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); save "
                        "the file as UTF-8") from None


def _read_json(path: Path) -> list[dict]:
    """A JSON list of objects, or JSON Lines (also when the file is named .json)."""
    text = _decode(path, path.read_bytes())
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        for i, item in enumerate(items, start=1):  # rows count from 1, as everywhere
            if not isinstance(item, dict):
                raise DataError(f"{path}: item {i} of the list is a {_json_type(item)}, "
                                "expected an object")
        return items
    try:
        return _parse_lines(path, text)
    except DataError:
        # A single pretty-printed object spans lines; accept it as one row before giving up.
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict):
            return [whole]
        raise


def _parse_lines(path: Path, text: str) -> list[dict]:
    rows = []
    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: a JSON {_json_type(row)}, expected an object "
                            "({...}) per line")
        rows.append(row)
    return rows


def _json_type(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _read_csv(path: Path) -> list[dict]:
    """Every cell as a string, empty cells as "" (no NaN guessing: '00123' stays '00123')."""
    text = _decode(path, path.read_bytes())
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # long dialogues exceed the 128 KiB default; restored below
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows: list[dict] = []
        header = None
        start = 1
        try:
            for record in reader:
                if header is None:
                    header = record
                    dupes = sorted({h for h in header if header.count(h) > 1})
                    if dupes:
                        raise DataError(f"{path}:1: duplicate column name '{dupes[0]}'")
                elif record:  # blank lines are not rows
                    if len(record) != len(header):
                        raise DataError(f"{path}:{start}: {len(record)} fields, the header has "
                                        f"{len(header)}")
                    rows.append(dict(zip(header, record)))
                start = reader.line_num + 1
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
    finally:
        csv.field_size_limit(old_limit)
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    return table.to_pylist()  # native Python values (no numpy scalars, None for nulls)


# ----------------------------------------------------------------------------- datasets

def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _to_rows(ds, max_samples: int | None) -> list[dict]:
    if max_samples is not None and len(ds) > max_samples:
        ds = ds.select(range(max_samples))  # avoid converting rows that are cut anyway
    return ds.to_list()


def _read_saved(path: Path, split: str, max_samples: int | None) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - any failure becomes one readable line
        raise DataError(f"{path}: not readable with datasets.load_from_disk "
                        f"({type(err).__name__}: {_first_line(err)})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split '{split}' (available: {', '.join(ds)}); set "
                            "data.split")
        ds = ds[split]
    rows = _to_rows(ds, max_samples)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _read_hub(name: str, config: str | None, split: str, max_samples: int | None) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # noqa: BLE001 - network, missing dataset/config/split, ...
        where = f"{name}" + (f" (config {config})" if config else "") + f" split {split}"
        raise DataError(f"{where}: could not load with datasets.load_dataset "
                        f"({type(err).__name__}: {_first_line(err)})") from None
    rows = _to_rows(ds, max_samples)
    if not rows:
        raise DataError(f"{name}: no rows")
    return rows


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def data_fingerprint(data_cfg, examples) -> str:
    """The data options and the data. A local file is hashed as bytes (a million rows in well
    under a second, without parsing them); other sources by their formatted samples, built by
    ``examples()``, incrementally: no giant string at a million rows."""
    digest = hashlib.sha256(json.dumps(asdict(data_cfg), sort_keys=True, default=str).encode())
    path = Path(data_cfg.path).expanduser()
    if data_cfg.path != "demo" and path.is_file():
        digest.update(b"file bytes:")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
        return digest.hexdigest()[:16]
    for e in examples():
        digest.update(f"{len(e.id)}:{e.id}{len(e.prompt)}:{e.prompt}{len(e.response)}:"
                      f"{e.response}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]
