"""Stages a selection run takes from another run of the same bench when their inputs agree.

In an "oracle" bench the small model is the target. STAFF's train-small is then the very run
the baselines' train-target is (same model, data, LoRA, recipe and seed: the same
fingerprint), and its score is their score-target without the embeddings (which only D2
reads). Instead of fine-tuning and scoring twice (25 minutes per seed on DialogSum here, hours
at N = 4,000 on a CPU), the second run copies
the first one's outputs and records the stage as done, with the donor's time, since that is
what the stage costs, and where it came from (``adopted_from`` in state.json).

The same holds across seeds when the bench holds stage 1 fixed (``stage1_seed``): every seed's
train-small and score then have the stage-1 seed's fingerprint, and are copied from that run.

A stage is taken only when its fingerprint equals the donor's, so a bench whose small model
differs from its target, or whose options differ, takes nothing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..config import RunConfig
from ..runs.folder import RunFolder, write_atomic, write_dir_atomic
from ..runs.layout import OUTPUTS

log = logging.getLogger(__name__)

# The donor stage that computes the same thing as a stage when their fingerprints agree.
# score-target also writes the target's embeddings, which score does not: taken from score, it
# has the scores (all GraNd, EL2N and CCS read) and no embeddings, and a D2 run, whose pick
# reads them, then redoes score-target (``Pipeline._first_with_inputs``), as it does in a run
# folder restored from a bench archive.
SAME_WORK = {"train-small": "train-target", "train-target": "train-small",
             "score": "score-target", "score-target": "score"}


def adopt_shared_stages(run_cfg: RunConfig, donors: list[Path]) -> list[str]:
    """Copy into ``run_cfg``'s run folder the leading stages that a donor run folder has done
    with the same fingerprint; returns the stages taken. Stops at the first stage that is
    neither done nor available, since the stages after it depend on it."""
    from ..pipeline import Pipeline

    mine = Pipeline(run_cfg, show_progress=False)
    fps = mine.fingerprints()
    folders = [RunFolder(d) for d in donors]
    taken = []
    for stage in mine.stages:
        done = mine.run.is_done(stage, fps[stage])
        if stage not in OUTPUTS:
            if done:
                continue
            break
        # The same stage of another run (another seed, stage 1 held fixed), or the same work
        # under the other name (small model = target); of those, the one that kept the most
        # of its outputs (a run restored from an archive has no adapter, no embeddings).
        found = sorted(((f, name) for name in (stage, SAME_WORK.get(stage)) if name
                        for f in folders if f.is_done(name, fps[stage])),
                       key=lambda found: -_kept(found[0], found[1], stage))
        if done:
            _fill_in(mine.run, stage, found)
            continue
        if not found:
            break
        donor, theirs = found[0]
        mine.run.create()
        for source, target in zip(OUTPUTS[theirs], OUTPUTS[stage]):
            # A donor restored from a bench archive has no adapter: the stage still counts as
            # done (its scores are what the later stages read); should a later stage need
            # the adapter, the pipeline redoes the fine-tuning (Pipeline._first_with_inputs).
            if (donor / source).exists():
                _copy(donor / source, mine.run / target)
        seconds = donor.state["stages"][theirs]["seconds"]
        mine.run.mark_done(stage, fps[stage], seconds,
                           adopted_from=f"{donor.path} ({theirs})")
        log.info("stage %s: taken from %s's %s (the same inputs)", stage, donor.path, theirs)
        taken.append(stage)
    return taken


def _kept(donor: RunFolder, theirs: str, stage: str) -> int:
    """How many of ``stage``'s outputs the donor's ``theirs`` stage still has."""
    return sum((donor / source).exists() for source, _ in zip(OUTPUTS[theirs], OUTPUTS[stage]))


def _fill_in(run: RunFolder, stage: str, donors: list[tuple[RunFolder, str]]) -> None:
    """Copy into a done stage the outputs it lacks from a donor that did the same work.

    A seed's selection folder restored from a bench archive has score-target done without the
    target's embeddings; with stage 1 held fixed, D2's pick at that seed would otherwise score
    the target again, and fine-tune it first for want of the adapter (~1.3 h a seed at
    N = 4,000 on a CPU), to remake what the stage-1 seed's folder already holds."""
    for donor, theirs in donors:
        for source, target in zip(OUTPUTS[theirs], OUTPUTS[stage]):
            if not (run / target).exists() and (donor / source).exists():
                _copy(donor / source, run / target)
                log.info("stage %s: %s taken from %s (the same inputs)", stage, target,
                         donor.path)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        write_dir_atomic(target, lambda d: shutil.copytree(source, d, dirs_exist_ok=True))
    else:
        write_atomic(target, source.read_bytes())
