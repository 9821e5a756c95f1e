"""A run folder -> ``report.html``: one self-contained page (figures embedded as base64 PNG).

Reads files only: config.yaml, scores.csv, verification.csv, timings.json (or state.json),
selections/summary.json and selections/p*/{ids.txt, regions.csv}; for the composition section
also the run's data, through ``staff.data`` (which reads files, never a model).

This module assembles the page; each section is written in ``sections.py``, from the HTML
building blocks of ``markup.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..runs import layout as L
from ..runs.folder import write_atomic
from .markup import _e
from .read import ReportError, read_run
from .sections import (agreement_section, benchmark_section, composition_section, decile_section,
                       flagged_section, hardest_section, header, length_section, regions_section,
                       scores_section, timings_section)

log = logging.getLogger(__name__)


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
  max-width:1060px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
h3{margin-bottom:.3em} img{max-width:100%;display:block;margin:.5em 0}
.read{color:#555;font-size:.92em;margin:0 0 1.2em} .note{background:#fff7e0;padding:.5em .8em;
  border-left:4px solid #e8b100} .meta{color:#555}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4;text-align:right}
th{background:#f4f5f7} td:first-child,th:first-child{text-align:left}
details{margin:.4em 0 1.2em} summary{cursor:pointer;color:#4c78a8}
code{background:#f4f5f7;padding:0 .25em}
"""


def build_report(run_dir: str | Path, *, method: str | None = None,
                 benchmark: list[dict] | None = None) -> Path:
    """Write the report on ``method``'s coresets (default: STAFF's, else the folder's only
    method) atomically -- ``report.html`` for STAFF, ``report-<method>.html`` for another --
    and return its path. ``benchmark``: rows for :func:`benchmark_section`, left out when None."""
    run = read_run(run_dir, method)
    if not run.rates:
        raise ReportError(f"{L.selections_dir(run.path, run.method) / L.SUMMARY} lists no "
                          "pruning rate.")
    if run.method == "staff":
        body = [header(run), scores_section(run), regions_section(run),
                agreement_section(run), decile_section(run), length_section(run),
                hardest_section(run), composition_section(run), flagged_section(run),
                timings_section(run)]
    else:  # no regions and no small model: what was kept, and what it cost
        body = [header(run), length_section(run), composition_section(run),
                flagged_section(run), timings_section(run)]
    if benchmark:
        body.append(benchmark_section(benchmark))
    body = _numbered(body)
    title = "STAFF" if run.method == "staff" else run.method
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)} report: {_e(run.path.name)}</title><style>{CSS}</style></head>"
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")
    out = run.path / L.report_name(run.method)
    write_atomic(out, page)
    log.info("report written: %s", out)
    return out


def _numbered(parts: list[str]) -> list[str]:
    """Sections numbered in the order shown (a baseline's report leaves some out)."""
    import re

    count = iter(range(1, 100))
    return [re.sub(r"<h2([^>]*)>(?:\d+\. )?", lambda m: f"<h2{m.group(1)}>{next(count)}. ", part)
            for part in parts]


def build_reports(run_dir: str | Path) -> list[Path]:
    """A report for every method with coresets in the folder (``staff report``)."""
    from ..runs.result import methods_in

    methods = methods_in(run_dir) or [None]  # None: read_run names what is missing
    return [build_report(run_dir, method=m) for m in methods]
