"""What a run folder holds, read back: which stages each method runs, and the finished
selection as a ``SelectionResult`` (``staff.pipeline`` writes it; reports and benchmarks read it).
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .runfolder import RunFolder, read_table

STAGES = ("train-small", "score", "verify", "pick")        # STAFF
TARGET_STAGES = ("train-target", "score-target", "pick")   # GraNd, EL2N, CCS, D2
# A stage's resumable work (checkpoints, score shards): kept while the stage is unfinished, so
# that a killed run resumes it, and removed once the stage is recorded as done.
SCRATCH = {"train-small": "finetune", "score": "score_shards",
           "train-target": "finetune_target", "score-target": "score_target_shards"}


def stages_for(selection) -> tuple[str, ...]:
    """The stages a selection method runs, in order."""
    if selection.method in ("random", "length"):
        return ("pick",)
    if selection.method != "staff":
        return TARGET_STAGES
    if selection.speculative == "untuned-target":
        return ("score", "verify", "pick")
    return STAGES


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
        path = selections_dir(self.run_dir, self.method) / rate_dir(pruning_rate) / "coreset.jsonl"
        return datasets.load_dataset("json", data_files=str(path), split="train")

    @property
    def selection_overhead(self) -> float:
        """Seconds spent selecting (the paper's Table 2 measure): this method's stages."""
        return float(sum(self.timings.values()))


def rate_dir(rate: float) -> str:
    return f"p{rate:.2f}"


def selections_dir(run_dir: str | Path, method: str = "staff") -> Path:
    """Where a method's coresets go. Each method has its own place, so that a baseline run in
    a STAFF run folder (the README's example: they share the fine-tuned target) never
    overwrites STAFF's coresets: STAFF, the default, writes selections/p0.50/..., another
    method selections/<method>/p0.50/... (a rate folder is named p*, never like a method)."""
    root = Path(run_dir) / "selections"
    return root if method == "staff" else root / method


def report_name(method: str = "staff") -> str:
    """The report of a method's coresets: report.html for STAFF, report-<method>.html else."""
    return "report.html" if method == "staff" else f"report-{method}.html"


def methods_in(run_dir: str | Path) -> list[str]:
    """The methods that have coresets in a run folder (STAFF first)."""
    from .config import SelectionConfig

    names = typing.get_args(typing.get_type_hints(SelectionConfig)["method"])
    return [m for m in names if (selections_dir(run_dir, m) / "summary.json").is_file()]


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
    summary = json.loads((folder_of / "summary.json").read_text())
    if rates is not None:
        wanted = {rate_dir(p) for p in rates}
        summary = {k: v for k, v in summary.items() if k in wanted}
    # Random and length have no scores: STAFF's scores.csv in the same folder are not theirs.
    scores_file = (None if method in ("random", "length")
                   else run / ("scores.csv" if method == "staff" else "target_scores.csv"))
    scores = (read_table(scores_file) if scores_file and scores_file.is_file()
              else pd.DataFrame(columns=["id"]))
    verification = (read_table(run / "verification.csv")
                    if method == "staff" and (run / "verification.csv").is_file()
                    else pd.DataFrame(columns=["id", "region"]))
    ids, regions = {}, {}
    for name, info in summary.items():
        p = info["pruning_rate"]
        folder = folder_of / name
        ids[p] = (folder / "ids.txt").read_text(encoding="utf-8").splitlines()
        if (folder / "regions.csv").is_file():
            regions[p] = pd.read_csv(folder / "regions.csv")
    timings = run.timings()
    timings = {k: v for k, v in timings.items()
               if k in stages_for(_MethodView(method, timings))}
    return SelectionResult(run_dir=run.path, ids=ids, scores=scores, regions=regions,
                           verification=verification, timings=timings, method=method,
                           n_samples=int(next(iter(summary.values()), {}).get("n", 0)))


@dataclass
class _MethodView:
    """Enough of a SelectionConfig for ``stages_for``, read back from a run folder."""

    method: str
    timings: dict

    @property
    def speculative(self) -> str:
        return "small" if "train-small" in self.timings else "untuned-target"
