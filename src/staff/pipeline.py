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

import io
import logging
import shutil
import time
from dataclasses import asdict, replace

import numpy as np
import pandas as pd

from .config import FINETUNE_NO_EFFECT, ConfigError, RunConfig
from .results import (SCRATCH, STAGES, TARGET_STAGES, SelectionResult, load_result,  # noqa: F401
                      rate_dir, report_name, selections_dir, stages_for)
from .runfolder import (RunFolder, RunFolderError, fingerprint, read_table, write_atomic,
                        write_dir_atomic, write_json, write_table)

log = logging.getLogger(__name__)

class Pipeline:
    """Runs the stages of one config in its run folder."""

    def __init__(self, cfg: RunConfig, show_progress: bool = True,
                 rows: list[dict] | None = None):
        self.cfg = cfg
        self.run = RunFolder(cfg.output_dir)
        self.show_progress = show_progress
        self._rows = rows  # in-memory data (Python API), read instead of cfg.data.path
        self._examples = None
        self._data_fp: str | None = None
        self._tokenizers: dict[str, object] = {}
        self._device = None
        self._accelerator = None
        self._tuned = {}
        self._tokenized: dict[str, list] = {}  # role -> fine-tuned model, reused by the scoring stage in one process
        self.stages = stages_for(cfg.selection)

    # ---------------------------------------------------------------- shared inputs
    @property
    def device(self):
        if self._device is None:
            from .models.loading import pick_device

            self._device = pick_device(self.cfg.device)
            if self.accelerator.num_processes > 1:
                self._device = self.accelerator.device  # one device per process
        return self._device

    @property
    def accelerator(self):
        """accelerate's view of the launch: one process, or one of many under
        `accelerate launch`."""
        if self._accelerator is None:
            from accelerate import Accelerator

            from .models.loading import pick_device

            self._accelerator = Accelerator(cpu=pick_device(self.cfg.device).type == "cpu")
        return self._accelerator

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def examples(self):
        if self._examples is None:
            from .data import load_rows, to_examples

            rows = load_rows(self.cfg.data) if self._rows is None else self._rows
            if self._rows is not None and self.cfg.data.max_samples is not None:
                rows = rows[:self.cfg.data.max_samples]
            self._examples = to_examples(rows, self.cfg.data, source=self.cfg.data.path)
            log.info("%d samples from %s", len(self._examples), self.cfg.data.path)
        return self._examples

    def tokenizer(self, role: str):
        if role not in self._tokenizers:
            from .models.loading import load_tokenizer

            self._tokenizers[role] = load_tokenizer(getattr(self.cfg, role))
        return self._tokenizers[role]

    def tokenized(self, role: str, subset: list[int] | None = None) -> list:
        """The samples tokenized for the ``role`` model, held compactly (int32 arrays: a
        Python list of ints costs ~8x more, which matters at millions of samples)."""
        from .data.formatting import tokenize_compact

        if subset is None and role in self._tokenized:
            return self._tokenized[role]
        examples = self.examples if subset is None else [self.examples[i] for i in subset]
        result = tokenize_compact(examples, self.tokenizer(role), self.cfg.data)
        log.info("tokenized %d samples for the %s model; %d truncated to data.cutoff_len=%d",
                 len(result), role, sum(t.truncated for t in result), self.cfg.data.cutoff_len)
        if subset is None:
            self._tokenized[role] = result
        return result

    @property
    def data_fingerprint(self) -> str:
        if self._data_fp is None:
            from .data.sources import data_fingerprint

            self._data_fp = data_fingerprint(self.cfg.data, lambda: self.examples)
        return self._data_fp

    @property
    def n_samples(self) -> int:
        """N. Read from the run folder when it recorded this data (no need to read a million
        rows to pick new rates), else by reading the data."""
        if self._examples is None:
            known = self.run.data_size(self.data_fingerprint)
            if known is not None:
                return known
        return len(self.examples)

    def _resolve_sizes(self) -> None:
        """Unset K and b_v, scaled to N (logged; the run's config.yaml records the values)."""
        from .selection.base import resolve_sizes

        s = self.cfg.selection
        if s.regions is None or s.verify_per_region is None:
            # A copy: the caller's config (Python API) keeps its unset values.
            self.cfg = replace(self.cfg, selection=resolve_sizes(self.n_samples, s))

    def fingerprints(self) -> dict[str, str]:
        self._resolve_sizes()
        c, s = self.cfg, self.cfg.selection
        data = self.data_fingerprint
        tune_options = (asdict(c.lora), _options(c.finetune, *FINETUNE_NO_EFFECT), self.stage1_seed)
        scoring = _options(c.scoring, "shard_size")
        tune = fingerprint(data, asdict(c.small), *tune_options)
        if s.speculative == "untuned-target":
            score = fingerprint(data, "untuned", asdict(c.target), asdict(c.lora), scoring,
                                self.stage1_seed)
        else:
            score = fingerprint(tune, scoring)
        # Options added later join a fingerprint only when not at their default, so that runs
        # made before them are not redone.
        later = [v for v in (s.boundary,) if v != "upper"]
        verify = fingerprint(score, asdict(c.target), asdict(c.lora), c.scoring.scope, s.regions,
                             s.verify_per_region, s.hard_prune, s.verify_small_regions, s.score,
                             s.verify, c.seed, *_variant_options(s), *later)
        tune_target = fingerprint(data, asdict(c.target), *tune_options)
        score_target = fingerprint(tune_target, scoring)
        lengths = fingerprint(data, asdict(c.target))  # the target's tokenizer counts them
        before_pick = {"staff": verify, "random": data, "length": lengths}.get(s.method,
                                                                               score_target)
        return {"train-small": tune, "score": score, "verify": verify,
                "train-target": tune_target, "score-target": score_target,
                "pick": fingerprint(before_pick, _selection_options(s), c.seed,
                                    # STAFF's draws changed (per-sample keys): redo old picks
                                    *(["keyed-draws"] if s.method == "staff" else [])),
                "pick-basis": self._pick_basis(before_pick)}

    def _pick_basis(self, before_pick: str) -> str:
        """What a coreset depends on besides its rate: coresets with the same basis come from
        the same scores and options, so rate folders of earlier picks with it still belong to
        this run (``staff pick -p`` with new rates keeps them); others are stale."""
        s = self.cfg.selection
        options = {k: v for k, v in _selection_options(s).items() if k != "pruning_rates"}
        return fingerprint(before_pick, options, self.cfg.seed,
                           *(["keyed-draws"] if s.method == "staff" else []))

    @property
    def stage1_seed(self) -> int:
        """The seed of stage 1 (fine-tuning and scoring on the full data)."""
        return self.cfg.seed if self.cfg.stage1_seed is None else self.cfg.stage1_seed

    # ---------------------------------------------------------------- the run
    def run_all(self, force: tuple[str, ...] = ()) -> SelectionResult:
        # Bad input fails here, before anything is written: data, sizes, model paths.
        from .selection.base import check_sizes

        stages = self.stages
        self.accelerator  # noqa: B018 - the device is checked here, before any work
        fps = self.fingerprints()
        check_sizes(self.n_samples, self.cfg.selection)
        first = next((i for i, s in enumerate(stages)
                      if s in force or not self.run.is_done(s, fps[s])), len(stages))
        self._check_models(stages[first:])
        # Every option is checked by now: only from here on is the run folder touched.
        if self.is_main:
            self.run.create()
            with self.run.lock():
                return self._run_stages(first, fps)
        return self._run_stages(first, fps)  # under accelerate: only the main process locks

    def _run_stages(self, first: int, fps: dict[str, str]) -> SelectionResult:
        stages, acc = self.stages, self.accelerator
        if self.is_main:
            self.run.remove_partial()
            self.run.write_config(self.cfg)
            if self._examples is not None:
                self.run.remember_data(self.data_fingerprint, len(self._examples))
            # A kill right after a stage was recorded done leaves its resumable work behind;
            # nothing would ever read it again.
            for stage in stages[:first]:
                if stage in SCRATCH and (self.run / SCRATCH[stage]).exists():
                    shutil.rmtree(self.run / SCRATCH[stage], ignore_errors=True)
        acc.wait_for_everyone()
        for i, stage in enumerate(stages):
            if i >= first:
                if self.is_main:
                    self.run.forget(*stages[i:])  # what follows a redone stage is stale
                    self._prepare_scratch(stage, self._scratch_fingerprint(stage, fps[stage]))
                acc.wait_for_everyone()
                started = time.perf_counter()
                log.info("stage %s: running", stage)
                try:
                    extra = getattr(self, "_stage_" + stage.replace("-", "_"))() or {}
                except OSError as err:  # e.g. a full disk while a checkpoint is written
                    where = err.filename or f"run folder {self.run.path}"
                    raise RunFolderError(f"stage {stage}: {where}: {err.strerror or err}"
                                         ) from err
                acc.wait_for_everyone()
                # A resumed stage also counts what interrupted processes spent on the work it
                # kept (Table 2 would otherwise show only the last part).
                seconds = time.perf_counter() - started + extra.get("seconds_before_resume", 0)
                if self.is_main:
                    self.run.mark_done(stage, fps[stage], seconds, **extra)
                    if stage in SCRATCH:
                        shutil.rmtree(self.run / SCRATCH[stage], ignore_errors=True)
                log.info("stage %s: done in %.1f s", stage, seconds)
            else:
                log.info("stage %s: already done, skipped", stage)
        acc.wait_for_everyone()
        method, rates = self.cfg.selection.method, self.cfg.selection.pruning_rates
        if not self.is_main:
            return load_result(self.run.path, method, rates)
        write_json(self.run / "timings.json", self.run.timings())
        if self.cfg.report.enabled:  # every method gets one, in a file of its own
            try:
                from .report import build_report

                log.info("report: %s", build_report(self.run.path, method=method))
            except Exception as err:  # the selection is done; a report must not undo that
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                log.warning("report not written: %s", reason or type(err).__name__)
        result = load_result(self.run.path, method, rates)
        result.cached = list(stages[:first])  # done before, and not forced (first is the first that was)
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

    def _check_models(self, stages) -> None:
        """Fail before any work if a model that the stages to run need cannot be found or
        used as configured, or its tokenizer cannot load or lacks the chat template the data
        asks for (a bad target would otherwise show only after fine-tuning and scoring the
        small model)."""
        from .data.formatting import check_chat_template
        from .models.loading import check_hub_model, check_lora_targets

        untuned = self.cfg.selection.speculative == "untuned-target"
        roles = []
        if {"train-small", "score"} & set(stages) and not untuned:
            roles.append("small")
        if {"verify", "train-target", "score-target"} & set(stages) or (
                untuned and {"score", "verify"} & set(stages)) or (
                self.cfg.selection.method == "length" and stages):  # its tokenizer counts
            roles.append("target")
        for role in roles:
            model = getattr(self.cfg, role)
            check_hub_model(model.name, model.revision, role)
            if model.quantization != "none" and self.device.type != "cuda":
                raise ConfigError(f"{role}.quantization == {model.quantization!r} needs a "
                                  f"CUDA device (device is {self.device.type}).")
            check_lora_targets(model, self.cfg.lora)
            tokenizer = self.tokenizer(role)  # loaded now, reused by the stages
            if self.cfg.data.chat_template:
                check_chat_template(tokenizer)

    def _scratch_fingerprint(self, stage: str, fp: str) -> str:
        """What a stage's resumable work depends on: its result's inputs, and for score shards
        the shard size too (shards are read back by position; another size would leave
        samples unscored)."""
        if stage in ("score", "score-target"):
            return fingerprint(fp, self.cfg.scoring.shard_size)
        return fp

    def _prepare_scratch(self, stage: str, fp: str) -> None:
        """Resume a stage's work only if it was made with the same inputs: a killed run with
        other options left it, and it would mix into this one."""
        if stage not in SCRATCH:
            return
        folder = self.run / SCRATCH[stage]
        marker = folder / "fingerprint"
        if folder.exists() and not (marker.is_file() and marker.read_text().strip() == fp):
            log.info("stage %s: discarding %s, left by a run with other inputs", stage, folder)
            shutil.rmtree(folder)
        write_atomic(marker, fp + "\n")

    # ---------------------------------------------------------------- stages
    def _train(self, role: str) -> dict:
        """LoRA fine-tuning of the ``role`` model (small or target) on the full data."""
        from .finetune.lora import check_finite_losses, finetune_lora
        from .models.loading import attach_lora, load_model
        from .scoring.engine import named_errors

        c, model_cfg = self.cfg, getattr(self.cfg, role)
        data = self.tokenized(role)
        model = attach_lora(load_model(model_cfg, self.device), c.lora, self.stage1_seed)
        with named_errors(f"fine-tuning the {role} model {model_cfg.name}"):
            history = finetune_lora(model, data, self.tokenizer(role).pad_token_id, c.finetune,
                                    self.stage1_seed, self.run / SCRATCH[f"train-{role}"],
                                    accelerator=self.accelerator,
                                    checkpoint_every=c.finetune.checkpoint_every,
                                    show_progress=self.show_progress and self.is_main)
        check_finite_losses(history["loss"], f"the {role} model {model_cfg.name}")
        if self.is_main:
            write_dir_atomic(self.run / f"{role}_adapter",
                             lambda d: model.save_pretrained(d, save_embedding_layers=False))
            write_json(self.run / f"{role}_finetune_history.json", history)
        self._tuned[role] = model
        return {"final_loss": history["loss"][-1] if history["loss"] else None,
                "seconds_before_resume": round(history["seconds_before_resume"], 3)}

    def _score(self, role: str, tuned: bool, stage: str, out_name: str,
               embeddings: bool = False) -> dict:
        """Effort, loss and EL2N of every sample on the ``role`` model, fine-tuned (its saved
        adapter) or untuned (a fresh adapter)."""
        from .models.loading import attach_lora, load_adapter, load_model
        from .scoring.engine import named_errors, score_samples

        c, model_cfg = self.cfg, getattr(self.cfg, role)
        data = self.tokenized(role)
        model = self._tuned.pop(role, None) if tuned else None
        if model is None:
            base = load_model(model_cfg, self.device)
            model = (load_adapter(base, self.run / f"{role}_adapter") if tuned
                     else attach_lora(base, c.lora, self.stage1_seed, dropout=0.0))
        what = f"the {'fine-tuned' if tuned else 'untuned'} {role} model {model_cfg.name}"
        with named_errors(f"scoring on {what}"):
            table = score_samples(model, data, self.tokenizer(role).pad_token_id,
                                  batch_size=c.scoring.batch_size, scope=c.scoring.scope,
                                  device=self.device, shard_dir=self.run / SCRATCH[stage],
                                  shard_size=c.scoring.shard_size, embeddings=embeddings,
                                  desc=f"effort ({role})", accelerator=self.accelerator,
                                  show_progress=self.show_progress and self.is_main)
        if self.is_main:
            frame = pd.DataFrame({"id": table.ids, "effort": table.effort, "loss": table.loss,
                                  "el2n": table.el2n, "n_response_tokens": table.n_tokens})
            write_table(self.run / out_name, frame)
            if embeddings:
                buffer = io.BytesIO()
                np.save(buffer, table.embeddings.astype(np.float32))
                write_atomic(self.run / "target_embeddings.npy", buffer.getvalue())
        return {"samples": len(table.ids)}

    def _stage_train_small(self) -> dict:
        return self._train("small")

    def _stage_train_target(self) -> dict:
        return self._train("target")

    def _stage_score(self) -> dict:
        if self.cfg.selection.speculative == "untuned-target":
            return self._score("target", tuned=False, stage="score", out_name="scores.csv")
        return self._score("small", tuned=True, stage="score", out_name="scores.csv")

    def _stage_score_target(self) -> dict:
        return self._score("target", tuned=True, stage="score-target",
                           out_name="target_scores.csv", embeddings=True)

    def _selection_input(self):
        from .selection.base import SelectionInput

        method = self.cfg.selection.method
        if method == "random":
            return SelectionInput(ids=np.array([e.id for e in self.examples]))
        if method == "length":  # response tokens as the target tokenizes them; no model
            counts = [int(np.sum(t.labels != -100)) for t in self.tokenized("target")]
            return SelectionInput(ids=np.array([e.id for e in self.examples]),
                                  scores={"n_response_tokens": np.array(counts, dtype=float)})
        name = "scores.csv" if method == "staff" else "target_scores.csv"
        scores = read_table(self.run / name)
        embeddings = None
        if method == "d2":
            embeddings = np.load(self.run / "target_embeddings.npy")
        return SelectionInput(ids=scores["id"].to_numpy(), embeddings=embeddings,
                              scores={k: scores[k].to_numpy() for k in
                                      ("effort", "loss", "el2n", "n_response_tokens")})

    def _stage_verify(self) -> dict:
        if not self.is_main:  # K·b_v samples: one process is plenty
            return {}
        from .selection import make_selector

        score = self.cfg.selection.score
        data = self._selection_input()
        selector = make_selector(self.cfg.selection, self._target_scorer)
        regions, plan, factors = selector.prepare(data, self.cfg.seed)
        columns = ["id", "region", f"small_{score}", f"target_{score}"]
        rows = [(data.ids[i], r, data.scores[score][i], selector.target_scores[int(i)])
                for r, idx in plan.items() for i in idx]
        table = pd.DataFrame(rows, columns=columns)
        write_table(self.run / "verification.csv", table)
        _warn_if_low_agreement(table[columns[2]].to_numpy(float), table[columns[3]].to_numpy(float))
        return {"target_samples": len(rows)}

    def _target_scorer(self, indices: np.ndarray) -> np.ndarray:
        """Effort of the given samples on the target with a fresh LoRA (B = 0)."""
        from .models.loading import attach_lora, load_model, tokenizer_fingerprint
        from .scoring.engine import named_errors, score_samples

        c = self.cfg
        if tokenizer_fingerprint(self.tokenizer("small")) != tokenizer_fingerprint(
                self.tokenizer("target")) and not _task_vocabulary_draft(c.small.name):
            log.warning("small (%s) and target (%s) tokenize differently: they are not one "
                        "family, so the speculative scores may agree less with the target's",
                        c.small.name, c.target.name)
        model = self._tuned.get("untuned-target") or attach_lora(
            load_model(c.target, self.device), c.lora, c.seed, dropout=0.0)
        subset = self.tokenized("target", [int(i) for i in indices])
        with named_errors(f"scoring on the target model {c.target.name}"):
            table = score_samples(model, subset, self.tokenizer("target").pad_token_id,
                                  batch_size=c.scoring.batch_size, scope=c.scoring.scope,
                                  device=self.device, desc="verification (target)",
                                  show_progress=self.show_progress)
        return getattr(table, c.selection.score)

    def _source_lines(self, n: int):
        """Where the coreset rows come from: the source file's own lines when it is JSON Lines
        (no parsing: fast at millions of rows, rows unchanged), else the parsed rows."""
        from .data.source_lines import ParsedRows, SourceLines, with_id

        c = self.cfg.data
        lines = None if c.path == "demo" else SourceLines.open(c.path, n, c.max_samples)
        return lines or ParsedRows([with_id(e.row, c.id_field, e.id) for e in self.examples])

    def _stage_pick(self) -> dict:
        from .data.source_lines import text_lines
        from .selection import make_selector
        from .selection.base import coreset_size

        if not self.is_main:
            return {}
        s = self.cfg.selection
        data = self._selection_input()
        selector = make_selector(s, _missing_target)
        if s.method == "staff" and s.verify:  # the target's scores from stage verify
            verification = read_table(self.run / "verification.csv")
            position = pd.Index(data.ids).get_indexer(verification["id"])
            selector.target_scores.update(zip(position.tolist(),
                                              verification.iloc[:, 3].astype(float)))
        lines = self._source_lines(data.n)
        root = selections_dir(self.run.path, s.method)
        basis = self.fingerprints()["pick-basis"]
        summary = _earlier_rates(root, basis)
        # Until every rate folder is in place there is no summary.json: readers (report,
        # bench) read nothing half-done. (Rate folders of earlier picks stay on disk.)
        (root / "summary.json").unlink(missing_ok=True)
        for p in s.pruning_rates:
            m = coreset_size(data.n, p)
            # File order in both files: line k of ids.txt is the id of line k of coreset.jsonl.
            chosen = np.sort(selector.select(data, m, self.cfg.seed))
            folder = root / rate_dir(p)
            ids = np.asarray(data.ids)[chosen]
            table = getattr(selector, "table_", None)

            def write(tmp, chosen=chosen, ids=ids, table=table):
                write_atomic(tmp / "ids.txt", "".join(text_lines(ids)))
                if table is not None:
                    write_table(tmp / "regions.csv", pd.DataFrame([asdict(r) for r in table]))
                write_atomic(tmp / "coreset.jsonl",
                             lines.subset(chosen, ids, self.cfg.data.id_field))

            # A rate folder is written aside and renamed into place: a kill leaves the old one
            # or the new one, never ids.txt of one pick beside coreset.jsonl of another.
            write_dir_atomic(folder, write)
            summary[rate_dir(p)] = {"pruning_rate": p, "n": data.n, "m": m, "method": s.method,
                                    "basis": basis, "current": True}
            log.info("p = %.2f: kept %d of %d samples -> %s", p, m, data.n, folder)
        summary = dict(sorted(summary.items(), key=lambda kv: kv[1]["pruning_rate"]))
        write_json(root / "summary.json", summary)
        return {"rates": list(summary), "method": s.method}


def _task_vocabulary_draft(name: str) -> bool:
    """A `staff draft` with the task's vocabulary: its tokenizer is the target's, cut to the
    task's tokens and checked to split the task's samples the same way; not another family."""
    import json
    from pathlib import Path

    try:
        record = json.loads((Path(name).expanduser() / "draft.json").read_text())
    except (OSError, ValueError):
        return False
    sizes = record.get("vocabulary", {})
    return sizes.get("draft", 0) < sizes.get("target", 0)


def _variant_options(s) -> tuple:
    """The region and length options beyond the paper, when set: they change the regions and
    so the verified samples. Left out at their defaults, so that runs made before they existed
    keep their fingerprints."""
    options = {"region_edges": s.region_edges, "length_adjust": s.length_adjust}
    if s.region_edges == "quantile-clipped":
        options["region_clip"] = s.region_clip
    changed = {k: v for k, v in options.items() if v not in ("equal-width", "none")}
    return (changed,) if changed else ()


def _warn_if_low_agreement(small: np.ndarray, target: np.ndarray) -> None:
    """STAFF rests on the small model ranking samples as the target does; say so in the log
    when, on the verified samples, it does not (the report explains it in place too)."""
    if len(small) < 3 or np.ptp(small) == 0 or np.ptp(target) == 0:
        return
    from scipy.stats import spearmanr

    from .report.html import LOW_RHO, low_agreement_note

    rho = float(spearmanr(small, target).statistic)
    if np.isnan(rho) or rho < LOW_RHO:
        log.warning(low_agreement_note(rho))


def _earlier_rates(root, basis: str) -> dict:
    """The rate folders an earlier pick left in ``root`` (listed in its summary.json, ids.txt
    on disk), marked current when they were picked from the same scores and options as now."""
    import json

    try:
        earlier = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: dict(info, current=info.get("basis") == basis)
            for name, info in earlier.items()
            if isinstance(info, dict) and (root / name / "ids.txt").is_file()}


def _options(section, *ignore: str) -> dict:
    """A config section's options minus those that cannot change a stage's result (how often
    to checkpoint): changing them must not redo the stage."""
    return {k: v for k, v in asdict(section).items() if k not in ignore}


# SelectionConfig options added after runs were made, with the value those runs used.
_LATER_SELECTION_OPTIONS = {"fill": "weighted", "boundary": "upper"}


def _selection_options(s) -> dict:
    """The selection options for the pick fingerprint; an option added later is left out at
    its default, so that a finished run's pick is not redone for it."""
    return {k: v for k, v in asdict(s).items() if _LATER_SELECTION_OPTIONS.get(k, object()) != v}


def _missing_target(indices) -> np.ndarray:  # pragma: no cover - a corrupted run folder
    raise RuntimeError("verification.csv lacks samples the selection needs; redo `staff verify`.")


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
