"""A finished selection run folder, read back as a ``SelectionResult`` (``staff.pipeline``
writes it; reports and benchmarks read it)."""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .folder import RunFolder, read_table
from .layout import (CORESET, IDS, REGIONS, SUMMARY, VERIFICATION, rate_dir, scores_file,
                     selections_dir, stages_for)


@dataclass
class SelectionResult:
    """What a selection run produced; every array is keyed by sample id."""

    run_dir: Path
    ids: dict[float, list[str]]                 # pruning rate -> selected ids
    scores: pd.DataFrame                         # id, effort, loss, el2n, n_tokens (+ region)
    regions: dict[float, pd.DataFrame]           # pruning rate -> region table
    verification: pd.DataFrame                   # id, region, small score, target score
    timings: dict[str, float] = field(default_factory=dict)   # this method's stages only
    method: str = "staff"
    n_samples: int = 0                                           # N, the full data
    cached: list[str] = field(default_factory=list)  # stages this call skipped as done before
    report: Path | None = None                                   # its report.html

    def coreset(self, pruning_rate: float):
        """The coreset at ``pruning_rate`` as a ``datasets.Dataset``: the rows of its
        coreset.jsonl, each with its id, loaded as `datasets.load_dataset("json", ...)` loads
        it for a trainer (e.g. TRL's SFTTrainer)."""
        import datasets

        if pruning_rate not in self.ids:
            raise ValueError(f"pruning rate {pruning_rate} is not in this result; it has "
                             f"{', '.join(f'{p:g}' for p in self.ids)}.")
        path = selections_dir(self.run_dir, self.method) / rate_dir(pruning_rate) / CORESET
        return datasets.load_dataset("json", data_files=str(path), split="train")

    @property
    def selection_overhead(self) -> float:
        """Seconds spent selecting (the paper's Table 2 measure): this method's stages."""
        return float(sum(self.timings.values()))


def methods_in(run_dir: str | Path) -> list[str]:
    """The methods that have coresets in a run folder (STAFF first)."""
    from ..config import SelectionConfig

    names = typing.get_args(typing.get_type_hints(SelectionConfig)["method"])
    return [m for m in names if (selections_dir(run_dir, m) / SUMMARY).is_file()]


def load_result(run_dir: str | Path, method: str | None = None,
                rates: list[float] | None = None) -> SelectionResult:
    """Read a finished run folder back into a SelectionResult: the coresets of ``method``
    (default: STAFF's, else the only method in the folder), at ``rates`` (default: every rate
    on disk that summary.json lists)."""
    run = RunFolder(run_dir)
    if method is None:
        found = methods_in(run.path)
        method = found[0] if found else "staff"
    folder_of = selections_dir(run.path, method)
    summary = json.loads((folder_of / SUMMARY).read_text())
    if rates is not None:
        wanted = {rate_dir(p) for p in rates}
        summary = {k: v for k, v in summary.items() if k in wanted}
    name = scores_file(method)
    scores = (read_table(run / name) if name and (run / name).is_file()
              else pd.DataFrame(columns=["id"]))
    verification = (read_table(run / VERIFICATION)
                    if method == "staff" and (run / VERIFICATION).is_file()
                    else pd.DataFrame(columns=["id", "region"]))
    ids, regions = {}, {}
    for name, info in summary.items():
        p = info["pruning_rate"]
        folder = folder_of / name
        ids[p] = (folder / IDS).read_text(encoding="utf-8").splitlines()
        if (folder / REGIONS).is_file():
            regions[p] = pd.read_csv(folder / REGIONS)
    timings = run.timings()
    # A run with a small model recorded train-small; one scored on the untuned target did not.
    speculative = "small" if "train-small" in timings else "untuned-target"
    timings = {k: v for k, v in timings.items() if k in stages_for(method, speculative)}
    return SelectionResult(run_dir=run.path, ids=ids, scores=scores, regions=regions,
                           verification=verification, timings=timings, method=method,
                           n_samples=int(next(iter(summary.values()), {}).get("n", 0)))

