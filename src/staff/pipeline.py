"""The one place that wires the stages together, caches them in the run folder and resumes.

STAFF's stages (Algorithm 1):
  train-small  LoRA-fine-tune the small model on the full data (line 2)   -> small_adapter/
  score        effort (and loss, EL2N) of every sample on it (line 3)       -> scores.csv
  verify       regions, b_v draws per region, effort on the target (4-10)   -> verification.csv
  pick         the coreset for every pruning rate (lines 11-13)            -> selections/p*/
The baselines GraNd, EL2N, CCS and D2 (``selection.method``) fine-tune and score the target:
  train-target -> target_adapter/,  score-target -> target_scores.csv + target_embeddings.npy,
  pick. Random has only ``pick``. The ablation ``selection.speculative: untuned-target`` scores
  the untuned target in ``score`` instead of training a small model.

Each stage's fingerprint covers every option it depends on, so a changed option redoes that
stage and the ones after it, and nothing before it (new pruning rates only redo ``pick``).
The baselines' train-target / score-target do not depend on the method: several baselines run
in one folder share them, as they share the fine-tuned target in the paper.

Under ``accelerate launch`` every process runs the stages (fine-tuning data-parallel, scoring
sharded by sample); only the main process writes the run folder, logs and shows progress.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace

from .config import ConfigError, RunConfig
from .runs.folder import RunFolderError, use_scratch, write_json
from .runs.layout import SCRATCH, STAGES, TARGET_STAGES, TIMINGS, report_name  # noqa: F401
from .runs.result import SelectionResult, load_result
from .stages import RunContext, fingerprints, for_method

log = logging.getLogger(__name__)


class Pipeline:
    """Runs the stages of one config in its run folder."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True,
                 rows: list[dict] | None = None):
        self.ctx = RunContext(cfg, show_progress, rows)
        self.run = self.ctx.run
        self.show_progress = show_progress
        self._stages = for_method(cfg.selection)
        self.stages = tuple(s.name for s in self._stages)

    @property
    def cfg(self) -> RunConfig:
        return self.ctx.cfg  # with K and b_v resolved once fingerprints() ran

    def fingerprints(self) -> dict[str, str]:
        return fingerprints(self.ctx)

    # ---------------------------------------------------------------- the run
    def run_all(self, force: tuple[str, ...] = ()) -> SelectionResult:
        # Bad input fails here, before anything is written: data, sizes, model paths.
        from .selection.base import check_sizes

        ctx, names = self.ctx, self.stages
        ctx.accelerator  # noqa: B018 - the device is checked here, before any work
        fps = self.fingerprints()
        check_sizes(ctx.n_samples, self.cfg.selection)
        first = next((i for i, s in enumerate(names)
                      if s in force or not self.run.is_done(s, fps[s])), len(names))
        first = self._first_with_inputs(first)
        ctx.check_models(names[first:])
        # Every option is checked by now: only from here on is the run folder touched.
        if ctx.is_main:
            self.run.create()
            with self.run.lock():
                return self._run_stages(first, fps)
        return self._run_stages(first, fps)  # under accelerate: only the main process locks

    def _first_with_inputs(self, first: int) -> int:
        """The first stage to run, moved back to the stage that makes an input a later stage
        needs when that input is gone: a run folder restored from a bench archive keeps no
        adapter, so a score redone there needs train-small redone first."""
        made_by = {out: i for i, stage in enumerate(self._stages) for out in stage.outputs}
        while True:
            missing = next(((stage, name) for stage in self._stages[first:]
                            for name in stage.inputs
                            if made_by.get(name, first) < first
                            and not (self.run / name).exists()), None)
            if missing is None:
                return first
            stage, name = missing
            first = made_by[name]
            log.info("stage %s needs %s, which this run folder lacks: redoing stage %s",
                     stage.name, name, self.stages[first])

    def _run_stages(self, first: int, fps: dict[str, str]) -> SelectionResult:
        ctx, acc, names = self.ctx, self.ctx.accelerator, self.stages
        if ctx.is_main:
            self.run.remove_partial()
            self.run.write_config(self.cfg)
            if ctx.examples_loaded:
                self.run.remember_data(ctx.data_fingerprint, len(ctx.examples))
            # A kill right after a stage was recorded done leaves its resumable work behind;
            # nothing would ever read it again.
            for stage in names[:first]:
                if stage in SCRATCH and (self.run / SCRATCH[stage]).exists():
                    shutil.rmtree(self.run / SCRATCH[stage], ignore_errors=True)
        acc.wait_for_everyone()
        for i, stage in enumerate(self._stages):
            if i < first:
                log.info("stage %s: already done, skipped", stage.name)
                continue
            if ctx.is_main:
                self.run.forget(*names[i:])  # what follows a redone stage is stale
                if stage.scratch:
                    # Resume a stage's work only if it was made with the same inputs: a
                    # killed run with other options left it, and it would mix into this one.
                    if use_scratch(self.run / stage.scratch,
                                   stage.scratch_fingerprint(ctx, fps[stage.name])):
                        log.info("stage %s: discarding %s, left by a run with other inputs",
                                 stage.name, self.run / stage.scratch)
            acc.wait_for_everyone()
            started = time.perf_counter()
            log.info("stage %s: running", stage.name)
            try:
                extra = stage.run(ctx) or {}
            except OSError as err:  # e.g. a full disk while a checkpoint is written
                where = err.filename or f"run folder {self.run.path}"
                raise RunFolderError(f"stage {stage.name}: {where}: {err.strerror or err}"
                                     ) from err
            acc.wait_for_everyone()
            # A resumed stage also counts what interrupted processes spent on the work it
            # kept (Table 2 would otherwise show only the last part).
            seconds = time.perf_counter() - started + extra.get("seconds_before_resume", 0)
            if ctx.is_main:
                self.run.mark_done(stage.name, fps[stage.name], seconds, **extra)
                if stage.scratch:
                    shutil.rmtree(self.run / stage.scratch, ignore_errors=True)
            log.info("stage %s: done in %.1f s", stage.name, seconds)
        acc.wait_for_everyone()
        method, rates = self.cfg.selection.method, self.cfg.selection.pruning_rates
        if not ctx.is_main:
            return load_result(self.run.path, method, rates)
        write_json(self.run / TIMINGS, self.run.timings())
        if self.cfg.report.enabled:  # every method gets one, in a file of its own
            try:
                from .report import build_report

                log.info("report: %s", build_report(self.run.path, method=method))
            except Exception as err:  # the selection is done; a report must not undo that
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                log.warning("report not written: %s", reason or type(err).__name__)
        result = load_result(self.run.path, method, rates)
        result.cached = list(names[:first])  # done before, and not forced (first is the first that was)
        result.report = self.run / report_name(method)
        return result

    def run_stage(self, stage: str) -> SelectionResult:
        """Redo one stage; the stages before it must be done with the current config."""
        fps = self.fingerprints()
        if stage not in self.stages:
            raise ConfigError(f"selection.method {self.cfg.selection.method!r} has no stage "
                              f"{stage}; its stages: {', '.join(self.stages)}.")
        for before in self.stages[:self.stages.index(stage)]:
            if not self.run.is_done(before, fps[before]):
                raise ConfigError(f"stage {stage} needs stage {before} done with this config "
                                  f"first: run `staff select` (or `staff {before}`).")
        return self.run_all(force=(stage,))


IN_MEMORY = "<in-memory>"  # data.path of a run on data handed over in Python (no file)


def select(cfg, show_progress: bool = True, data=None) -> SelectionResult:
    """Python API: run every stage of ``cfg`` (skipping the finished ones).

    ``cfg``: a RunConfig, a YAML path or a config mapping. ``data``: a ``datasets.Dataset``
    (or a list of row dicts) to select from instead of ``data.path``, which may then be left
    out; the run records ``data.path: <in-memory>`` and re-running with the same rows reuses
    the finished stages (the rows themselves are fingerprinted). The coreset comes back as a
    Dataset: ``result.coreset(0.9)``."""
    from pathlib import Path

    from .config import config_from_dict, load_config

    override = {"data.path": IN_MEMORY} if data is not None else None
    if isinstance(cfg, (str, Path)):
        cfg = load_config(cfg, override)
    elif isinstance(cfg, dict):
        from .config import apply_overrides

        cfg = config_from_dict(apply_overrides(_deepcopy(cfg), override))
    elif data is not None:
        cfg = replace(cfg, data=replace(cfg.data, path=IN_MEMORY))
    rows = None
    if data is not None:
        rows = data.to_list() if hasattr(data, "to_list") else [dict(r) for r in data]
    return Pipeline(cfg, show_progress=show_progress, rows=rows).run_all()


def _deepcopy(tree: dict) -> dict:
    import copy

    return copy.deepcopy(tree)
