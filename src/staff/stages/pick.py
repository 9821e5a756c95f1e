"""Stage pick: the coreset for every pruning rate (Algorithm 1, lines 11-13; the baselines'
rules), each in its own rate folder: ids.txt, coreset.jsonl and, for STAFF, regions.csv."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import numpy as np
import pandas as pd

from ..runs.folder import fingerprint, write_atomic, write_dir_atomic, write_json, write_table
from ..runs.layout import (CORESET, IDS, REGIONS, SUMMARY, VERIFICATION, rate_dir,
                           selections_dir)
from .base import Stage, selection_input
from .context import RunContext

log = logging.getLogger(__name__)

# SelectionConfig options added after runs were made, with the value those runs used.
_LATER_SELECTION_OPTIONS = {"fill": "weighted", "boundary": "upper", "length_strata": 0}


class Pick(Stage):
    name = "pick"
    outputs = (CORESET, IDS, REGIONS, SUMMARY)  # in selections_dir / rate_dir

    def __init__(self, inputs: tuple[str, ...] = ()):
        # What it reads of the run folder beyond the scores, e.g. D2's embeddings: a run
        # restored from a bench archive has none, and the pipeline then redoes score-target
        # instead of failing on a missing file.
        self.inputs = tuple(inputs)

    def _before(self, ctx: RunContext, fps: dict[str, str]) -> str:
        """The fingerprint of what the method selects from."""
        lengths = fingerprint(ctx.data_fingerprint, asdict(ctx.cfg.target))  # its tokenizer
        return {"staff": fps["verify"], "random": ctx.data_fingerprint,
                "length": lengths}.get(ctx.cfg.selection.method, fps["score-target"])

    @staticmethod
    def _keyed(ctx: RunContext) -> list[str]:
        # STAFF's draws changed (per-sample keys): redo old picks
        return ["keyed-draws"] if ctx.cfg.selection.method == "staff" else []

    def fingerprint(self, ctx: RunContext, fps: dict[str, str]) -> str:
        return fingerprint(self._before(ctx, fps), _selection_options(ctx.cfg.selection),
                           ctx.cfg.seed, *self._keyed(ctx))

    def basis(self, ctx: RunContext, fps: dict[str, str]) -> str:
        """What a coreset depends on besides its rate: coresets with the same basis come from
        the same scores and options, so rate folders of earlier picks with it still belong to
        this run (``staff pick -p`` with new rates keeps them); others are stale."""
        options = {k: v for k, v in _selection_options(ctx.cfg.selection).items()
                   if k != "pruning_rates"}
        return fingerprint(self._before(ctx, fps), options, ctx.cfg.seed, *self._keyed(ctx))

    def run(self, ctx: RunContext) -> dict:
        from ..data.source_lines import text_lines
        from ..selection import make_selector
        from ..selection.base import coreset_size
        from . import fingerprints
        from .verify import verified_scores

        if not ctx.is_main:
            return {}
        s = ctx.cfg.selection
        data = selection_input(ctx)
        # STAFF's target check: the answers stage verify recorded.
        on_target = verified_scores(ctx, data.ids) if s.method == "staff" and s.verify \
            else _missing_target
        selector = make_selector(s, on_target)
        lines = _source_lines(ctx, data.n)
        root = selections_dir(ctx.run.path, s.method)
        basis = fingerprints(ctx)["pick-basis"]
        summary = _earlier_rates(root, basis)
        # Until every rate folder is in place there is no summary.json: readers (report,
        # bench) read nothing half-done. (Rate folders of earlier picks stay on disk.)
        (root / SUMMARY).unlink(missing_ok=True)
        for p in s.pruning_rates:
            m = coreset_size(data.n, p)
            # File order in both files: line k of ids.txt is the id of line k of coreset.jsonl.
            chosen = np.sort(selector.select(data, m, ctx.cfg.seed))
            folder = root / rate_dir(p)
            ids = np.asarray(data.ids)[chosen]
            table = getattr(selector, "table_", None)

            def write(tmp, chosen=chosen, ids=ids, table=table):
                write_atomic(tmp / IDS, "".join(text_lines(ids)))
                if table is not None:
                    write_table(tmp / REGIONS, pd.DataFrame([asdict(r) for r in table]))
                write_atomic(tmp / CORESET, lines.subset(chosen, ids, ctx.cfg.data.id_field))

            # A rate folder is written aside and renamed into place: a kill leaves the old one
            # or the new one, never ids.txt of one pick beside coreset.jsonl of another.
            write_dir_atomic(folder, write)
            summary[rate_dir(p)] = {"pruning_rate": p, "n": data.n, "m": m, "method": s.method,
                                    "basis": basis, "current": True}
            log.info("p = %.2f: kept %d of %d samples -> %s", p, m, data.n, folder)
        summary = dict(sorted(summary.items(), key=lambda kv: kv[1]["pruning_rate"]))
        write_json(root / SUMMARY, summary)
        return {"rates": list(summary), "method": s.method}


def _source_lines(ctx: RunContext, n: int):
    """Where the coreset rows come from: the source file's own lines when it is JSON Lines
    (no parsing: fast at millions of rows, rows unchanged), else the parsed rows."""
    from ..data.source_lines import ParsedRows, SourceLines, with_id

    c = ctx.cfg.data
    lines = None if c.path == "demo" else SourceLines.open(c.path, n, c.max_samples)
    return lines or ParsedRows([with_id(e.row, c.id_field, e.id) for e in ctx.examples])


def _earlier_rates(root, basis: str) -> dict:
    """The rate folders an earlier pick left in ``root`` (listed in its summary.json, ids.txt
    on disk), marked current when they were picked from the same scores and options as now."""
    try:
        earlier = json.loads((root / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: dict(info, current=info.get("basis") == basis)
            for name, info in earlier.items()
            if isinstance(info, dict) and (root / name / IDS).is_file()}


def _selection_options(s) -> dict:
    """The selection options for the pick fingerprint; an option added later is left out at
    its default, so that a finished run's pick is not redone for it."""
    return {k: v for k, v in asdict(s).items() if _LATER_SELECTION_OPTIONS.get(k, object()) != v}


def _missing_target(indices) -> np.ndarray:  # pragma: no cover - a corrupted run folder
    raise RuntimeError(f"{VERIFICATION} lacks samples the selection needs; redo `staff verify`.")
