"""What a run folder holds, read back: which stages each method runs, and the finished
selection as a ``SelectionResult`` (``staff.pipeline`` writes it; reports and benchmarks read it).
"""

from __future__ import annotations

import json
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

    @property
    def selection_overhead(self) -> float:
        """Seconds spent selecting (the paper's Table 2 measure): this method's stages."""
        return float(sum(self.timings.values()))


def rate_dir(rate: float) -> str:
    return f"p{rate:.2f}"


def load_result(run_dir: str | Path) -> SelectionResult:
    """Read a finished run folder back into a SelectionResult."""
    run = RunFolder(run_dir)
    summary = json.loads((run / "selections" / "summary.json").read_text())
    method = next(iter(summary.values()), {}).get("method", "staff")
    scores_file = run / ("target_scores.csv" if method not in ("staff", "random", "length")
                         else "scores.csv")
    scores = (read_table(scores_file) if scores_file.is_file()
              else pd.DataFrame(columns=["id"]))
    verification = (read_table(run / "verification.csv")
                    if method == "staff" and (run / "verification.csv").is_file()
                    else pd.DataFrame(columns=["id", "region"]))
    ids, regions = {}, {}
    for name, info in summary.items():
        p = info["pruning_rate"]
        folder = run / "selections" / name
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
