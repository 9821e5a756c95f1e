"""HTML building blocks of the report page: escaped text, an embedded PNG, a "how to read
this" line, a table, a number as the figures print it."""

from __future__ import annotations

import base64
import html

import pandas as pd

from . import figures


def _e(text) -> str:
    return html.escape(str(text))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _read(text: str) -> str:
    return f'<p class="read"><b>How to read this:</b> {text}</p>'


def _table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.astype(object).itertuples(index=False):  # object: ints stay ints
        cells = "".join(f"<td>{_e(formats[c](v) if c in formats else v)}</td>"
                        for c, v in zip(frame.columns, row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _num(v) -> str:
    return figures._fmt(float(v))
