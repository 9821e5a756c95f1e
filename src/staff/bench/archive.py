"""Carry a bench from one machine to the next: its selection runs (without weights) and its
recorded cells, kept in the repository beside the tables.

A bench on a CPU outlives a machine: stage 1 alone (fine-tune and score the full data) takes
hours there, and a machine that is handed back takes the bench folder with it. What the later
stages need of stage 1 is small: the effort scores (scores.csv, a few hundred kB), not the
fine-tuned adapter. ``bench/publish.py`` therefore keeps, beside results.json,

  select/<folder>/s<seed>/    each selection run folder minus what is large or is data:
                              adapters, score shards and checkpoints, embeddings (.npy),
                              the coresets' rows (coreset.jsonl: the dataset's text), reports

and a bench whose ``resume_from`` names that folder

- restores a selection run folder it does not have yet (the stages recorded in its state.json
  then count as done, with their fingerprints: a changed option still redoes what it changes,
  and a stage whose input was not kept, e.g. the adapter that a redone score would read, is
  redone too; see ``Pipeline``),
- and adds to its results.json the recorded cells it lacks (same bench fingerprint), so that
  a cell measured on another machine is not trained again: a cell is skipped when its entry
  records the fingerprint of the same fine-tuning (config, coreset, seed) and, where the part
  decodes, its ROUGE-L.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..runs.folder import RunFolder, write_dir_atomic, write_json
from ..runs.layout import CORESET, SCRATCH, STATE, TARGET_EMBEDDINGS
from .results import merge_results, read_store

log = logging.getLogger(__name__)

SELECT = "select"          # in a bench folder and in its archive: the selection run folders
RESULTS = "results.json"


def _kept(path: Path) -> bool:
    """Whether the archive keeps this entry of a selection run folder."""
    name = path.name
    if path.is_dir():
        return not (name.endswith("_adapter") or name in SCRATCH.values()
                    or name.startswith("."))
    return not (name in (CORESET, TARGET_EMBEDDINGS) or name.endswith((".npy", ".lock", ".html"))
                or name.startswith("."))


def _copy_kept(source: Path, target: Path) -> None:
    for entry in sorted(source.iterdir()):
        if not _kept(entry):
            continue
        if entry.is_dir():
            (target / entry.name).mkdir()
            _copy_kept(entry, target / entry.name)
        else:
            shutil.copy2(entry, target / entry.name)


def selection_runs(bench_dir: Path) -> list[Path]:
    """The selection run folders of a bench (or of an archive), by their state.json."""
    return sorted(p.parent for p in Path(bench_dir).glob(f"{SELECT}/*/s*/{STATE}"))


def turn_lock(folder: Path):
    """An exclusive lock beside ``folder`` (``<folder>.lock``), waited for: bench processes
    sharing a folder take turns on one cell or selection instead of both computing it, and a
    publish does not copy a selection run while a bench process is in it."""
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder) + ".lock")


def archive_selections(bench_dir: Path, dest: Path) -> list[Path]:
    """Copy every selection run folder of ``bench_dir`` into ``dest/select/`` without what
    ``_kept`` leaves out; each folder appears whole or not at all. Returns the copies.

    A folder a bench process is in (its turn lock is held) is left out, and the archive keeps
    its earlier copy: mid-run, a stage being redone is not recorded as done (a D2 run redoing
    the baselines' fine-tuning for its embeddings), and that copy would replace the archive's
    finished stage 1 with an empty one. The turn is held while the folder is copied, so a
    bench process that comes for it meanwhile waits instead of starting halfway through."""
    from filelock import Timeout

    copies = []
    for run in selection_runs(bench_dir):
        rel = run.relative_to(bench_dir)
        lock = turn_lock(run)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("selection run %s is in use by a bench process: not archived this "
                        "time (the archive keeps its earlier copy)", run)
            continue
        try:
            lost = _stages_lost(run, Path(dest) / rel)
            if lost:
                log.warning("selection run %s has not (yet) done %s, which its archived copy "
                            "has: not archived this time (a killed run that was redoing them; "
                            "the archive keeps the finished copy)", run, ", ".join(lost))
                continue
            write_dir_atomic(Path(dest) / rel, lambda d, run=run: _copy_kept(run, d))
        finally:
            lock.release()
        copies.append(Path(dest) / rel)
    return copies


def _stages_lost(run: Path, archived: Path) -> list[str]:
    """The stages the archived copy has done that the live run folder has not: a run killed
    while redoing them (it forgets a stage and all after it when it starts it again)."""
    return sorted(set(RunFolder(archived).state["stages"]) - set(RunFolder(run).state["stages"]))


def restore_selection(archive: Path, bench_dir: Path, run_dir: Path) -> bool:
    """Copy the archived copy of ``run_dir`` (a folder under ``bench_dir/select``) into place
    when ``run_dir`` has no state.json yet; True when it did."""
    run_dir = Path(run_dir)
    source = Path(archive) / run_dir.relative_to(bench_dir)
    if (run_dir / STATE).is_file() or not (source / STATE).is_file():
        return False
    write_dir_atomic(run_dir, lambda d: shutil.copytree(source, d, dirs_exist_ok=True))
    log.info("selection run %s: restored from %s (stages as recorded there; no weights)",
             run_dir, source)
    return True


def restore_results(archive: Path, results_path: Path, fp: str) -> int:
    """Add to ``results_path`` (under its lock) the entries of the archive's results.json that
    it lacks, if that was made with the fingerprint ``fp``; returns how many cells were added."""
    from filelock import FileLock

    old = read_store(Path(archive) / RESULTS)
    if not old:
        return 0
    if old.get("fingerprint") != fp:
        log.warning("resume_from: %s was made with other settings; nothing restored",
                    Path(archive) / RESULTS)
        return 0
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(results_path) + ".lock"):
        disk = read_store(results_path)
        if disk and disk.get("fingerprint") != fp:
            return 0  # the grid starts this store afresh; it does not mix settings
        disk = disk or {"fingerprint": fp, "cells": {}, "per_example": {}, "selection": {},
                        "runs": []}
        added = len(set(old.get("cells", {})) - set(disk.get("cells", {})))
        if added or set(old.get("selection", {})) - set(disk.get("selection", {})):
            write_json(results_path, merge_results(old, disk))
    if added:
        log.info("resume_from: %d recorded cells taken from %s", added, archive)
    return added
