"""The stages of a selection run (Algorithm 1), each an object with a name, the run-folder
files it reads and writes, a fingerprint and a ``run``; ``staff.pipeline`` runs them in order.

STAFF:      train-small -> score -> verify -> pick   (untuned-target ablation: score, verify, pick)
baselines:  train-target -> score-target -> pick     (GraNd, EL2N, CCS, D2; Random, Length: pick)
"""

from __future__ import annotations

from ..runs.layout import TARGET_EMBEDDINGS, stages_for
from .base import Stage
from .context import RunContext
from .pick import Pick
from .score import Score, ScoreTarget
from .train import Train
from .verify import Verify

# Every stage, in the order their fingerprints build on each other.
ALL: tuple[Stage, ...] = (Train("small"), Score(), Verify(), Train("target"), ScoreTarget(),
                          Pick())
BY_NAME: dict[str, Stage] = {s.name: s for s in ALL}


def for_method(selection) -> list[Stage]:
    """The stages ``selection.method`` runs, in order."""
    stages = [BY_NAME[name] for name in stages_for(selection.method, selection.speculative)]
    if selection.method == "d2":  # the only method whose pick reads the embeddings
        stages[-1] = Pick(inputs=(TARGET_EMBEDDINGS,))
    return stages


def fingerprints(ctx: RunContext) -> dict[str, str]:
    """Every stage's fingerprint (all of them, whatever the method: the baselines' stages of a
    STAFF run are shared with a baseline run in the same folder), and pick's basis."""
    ctx.resolve_sizes()
    fps: dict[str, str] = {}
    for stage in ALL:
        fps[stage.name] = stage.fingerprint(ctx, fps)
    fps["pick-basis"] = BY_NAME["pick"].basis(ctx, fps)
    return fps


__all__ = ["ALL", "BY_NAME", "RunContext", "Stage", "fingerprints", "for_method"]
