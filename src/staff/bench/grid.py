"""The benchmark grid: for every seed and method, select coresets at every pruning rate
(``staff.pipeline.select``), LoRA-fine-tune the target on each and evaluate it; plus the
target fine-tuned on the full data (p = 0) and the untuned target.

Layout of ``output_dir`` (everything cached; a stopped run resumes where it stopped):

  bench.yaml                    the resolved bench config
  select/<method>/s<seed>/      a selection run folder (resumes by itself; serves every rate);
                                GraNd, EL2N, CCS, D2 share select/baselines/s<seed>/; when
                                the small model is the target, STAFF's train-small and score
                                are copied from there (or theirs from STAFF's), not redone
  cells/untuned/eval/           metrics.json, predictions.jsonl of the untuned target
  cells/full/s<seed>/           adapter/, history.json, train.json, ids.txt, eval/
                                (both taken from ``reference_cells`` when it is set)
  cells/<method>/p0.90/s<seed>/ the same for one coreset
  results.json                  every finished cell and selection run (the tables' source;
                                ``results.py`` reads, merges and writes it)
  (``resume_from``: a published copy, ``archive.py``, restores selection runs and cells that
  another machine finished)
  tables.md                     Tables 1a (ROUGE-L), 1b (BLEU-4) and 2 (selection overhead)

A cell whose adapter and metrics exist with the same inputs (fingerprints over the config, the
coreset's ids and the data) is skipped, so a second call does no work.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import yaml

from ..config import ConfigError
from ..runs.folder import RunFolder, write_atomic
from ..runs.layout import EVAL_DIR, HELD_OUT_LOSS, METRICS, rate_dir
from .archive import SELECT, restore_results, restore_selection, turn_lock
from .cells_csv import full_size, write_cells_csv
from .config import (BenchConfig, Part, check_methods, check_protocol, check_rates,
                     check_seeds, row_order)
from .results import (bench_fingerprint, cell_entry, load_results, mixed_versions_note,
                      per_example_entry, save_results)
from .shared_stages import adopt_shared_stages
from .tables import cell_key, render

log = logging.getLogger(__name__)


def _pick(ids_by_rate: dict, p: float) -> list[str]:
    for rate, ids in ids_by_rate.items():
        if abs(float(rate) - p) < 1e-9:
            return ids
    raise KeyError(f"the selection run has no coreset for p = {p} (it has "
                   f"{sorted(ids_by_rate)}).")


class Grid:
    """One benchmark config; ``run`` does the requested part of the grid."""

    def __init__(self, cfg: BenchConfig, show_progress: bool = True):
        from ..evaluation.run import TrainEval

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.show_progress = show_progress
        self.train_eval = TrainEval(cfg.train_eval(), show_progress=show_progress)
        self.results_path = self.out / "results.json"
        if cfg.resume_from:  # cells measured on another machine (published) count as done
            restore_results(Path(cfg.resume_from), self.results_path, bench_fingerprint(cfg))
        self.results = load_results(self.results_path, bench_fingerprint(cfg))
        self._recorded = {"cells": set(), "per_example": set(), "selection": set()}

    def _save(self) -> None:
        save_results(self.results_path, self.results, self._recorded)

    # ---------------------------------------------------------------- the grid
    def run(self, methods: list[str] | None = None, rates: list[float] | None = None,
            seeds: list[int] | None = None, protocol: str | None = None,
            parts: list[int] | None = None) -> dict:
        """Run (or take from the cache) the config's parts, or, when any argument is given,
        the one part ``methods x rates x seeds`` under ``protocol`` (each defaulting to the
        config's top-level value); plus the full-data cell of every seed and the untuned
        target. ``parts``: run only these parts of the config (1-based). Writes results.json,
        cells.csv and tables.md as cells finish. Returns the results store."""
        c = self.cfg
        if parts is not None and any(a is not None for a in (methods, rates, seeds, protocol)):
            raise ConfigError("give either parts or methods/rates/seeds/protocol, not both.")
        if any(a is not None for a in (methods, rates, seeds, protocol)):
            parts = [Part(methods=check_methods(methods, c.variants) if methods else c.methods,
                          rates=check_rates(rates) if rates else c.pruning_rates,
                          seeds=check_seeds(seeds) if seeds else c.seeds,
                          protocol=check_protocol(protocol) if protocol else c.protocol)]
        elif parts is not None:
            every = c.grid_parts()
            bad = [i for i in parts if not (isinstance(i, int) and 1 <= i <= len(every))]
            if bad or not parts:
                raise ConfigError(f"parts == {parts}, must be numbers in 1..{len(every)} (the "
                                  "config's parts, in order).")
            parts = [every[i - 1] for i in parts]
        else:
            parts = c.grid_parts()
        # Selection covers the config's rates too, so that a partial call leaves the selection
        # run folder as the full grid wants it (the pick stage is cheap; the rest is shared).
        select_rates = sorted({*c.all_rates(), *(p for part in parts for p in part.rates)})
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "bench.yaml", yaml.safe_dump(c.to_dict(), sort_keys=False,
                                                              allow_unicode=True))
        cells = self.out / "cells"
        reference = self._reference_cells() or cells
        self._untuned(reference / "untuned" / EVAL_DIR)
        # With stage 1 held fixed, its seed goes first: the other seeds copy its stage 1.
        first = [c.stage1_seed] if c.stage1_seed is not None else []
        for part in parts:
            seeds = first + [s for s in part.seeds if s not in first] if set(first) & set(
                part.seeds) else part.seeds
            log.info("bench %s: methods %s, rates %s, seeds %s, protocol %s", self.out,
                     part.methods, part.rates, seeds, part.protocol)
            for seed in (seeds if c.full_seeds is None else c.full_seeds):
                self._cell("full", 0.0, seed, None, reference / "full" / f"s{seed}", "epochs",
                           True)
            for seed in seeds:
                for method in part.methods:
                    result = self._select(method, seed, select_rates)
                    for p in part.rates:
                        folder = cells / method.replace(":", "-") / rate_dir(p) / (
                            f"s{seed}" if part.protocol == "epochs" else f"s{seed}-steps")
                        self._cell(method, p, seed, _pick(result.ids, p), folder,
                                   part.protocol, c.decoded(p, part))
            self.write_tables()  # after each part: the bootstrap tables take seconds
        seconds = time.perf_counter() - started
        self.results["runs"].append({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                     "seconds": round(seconds, 1),
                                     "parts": [dataclasses.asdict(p) for p in parts]})
        self._save()
        self.write_tables()
        log.info("bench done in %.1f s -> %s", seconds, self.out / "tables.md")
        return self.results

    def _reference_cells(self) -> Path | None:
        """The cells folder of ``reference_cells``, after checking that its untuned and
        full-data cells were made with this bench's protocol (else they would be redone there,
        over the other bench's results)."""
        if not self.cfg.reference_cells:
            return None
        other = Path(self.cfg.reference_cells)
        if not (other / "bench.yaml").is_file():
            raise ConfigError(f"reference_cells: {other} has no bench.yaml; run that bench "
                              "first.")
        c, theirs = self.cfg, yaml.safe_load((other / "bench.yaml").read_text(encoding="utf-8"))
        mine = {"data": c.select.data, "model": c.select.target, "eval": c.eval,
                "lora": c.lora, "finetune": c.finetune}
        where = {"data": ("select", "data"), "model": ("select", "target"), "eval": ("eval",),
                 "lora": ("lora",), "finetune": ("finetune",)}

        def at(tree, keys):
            for key in keys:
                tree = (tree or {}).get(key)
            return tree

        differ = [k for k, section in mine.items()
                  if dataclasses.asdict(section) != at(theirs, where[k])]
        if differ:
            raise ConfigError(f"reference_cells: {other} evaluates with other "
                              f"{', '.join(differ)} settings; its cells do not apply here.")
        return other / "cells"

    def _select(self, method: str, seed: int, rates: list[float]):
        from ..models.loading import ModelError
        from ..pipeline import select

        run_cfg = self.cfg.selection_config(method, seed, rates)
        log.info("selection %s (seed %d) in %s", method, seed, run_cfg.output_dir)
        # With the small model = the target, STAFF's stage 1 is the baselines' fine-tuning;
        # with stage 1 held fixed, every seed's stage 1 is the stage-1 seed's.
        # A variant with its own small model (a draft) shares stage 1 with the config's other
        # variants of that small model, not with STAFF's: they are donors too.
        kin = {"staff", "grand", method} | {
            m for m in (f"staff:{v}" for v in self.cfg.variants)
            if self.cfg.selection_config(m, seed, rates).small.name == run_cfg.small.name}
        seeds = {seed} | ({self.cfg.stage1_seed} if self.cfg.stage1_seed is not None else set())
        donors = {Path(self.cfg.selection_config(m, s, rates).output_dir)
                  for m in kin for s in seeds}
        if self.cfg.stage1_seed is not None:
            donors |= self._other_seeds(kin, rates)
        donors -= {Path(run_cfg.output_dir)}
        # Another bench process (--parts, one per GPU) may be running this very selection:
        # wait for it, then find the stages done.
        with turn_lock(Path(run_cfg.output_dir)):
            if self.cfg.resume_from:
                # The donors too: a variant first run on a fresh machine takes stage 1 from
                # the archived STAFF run, which no process here has restored yet.
                for folder in [Path(run_cfg.output_dir), *sorted(donors)]:
                    restore_selection(Path(self.cfg.resume_from) / SELECT, self.out / SELECT,
                                      folder)
            adopt_shared_stages(run_cfg, sorted(donors))
            try:
                result = select(run_cfg, show_progress=self.show_progress)
            except ModelError as err:
                # A variant's own small model is most often a `staff draft` folder not built on
                # this machine yet: say which variant asks for it.
                variant = method.partition(":")[2]
                if "small" not in self.cfg.variants.get(variant, {}):
                    raise
                raise ModelError(f"{method}: variants.{variant}.small.name: {err} (a draft "
                                 "is built with `staff draft -c CONFIG`)") from None
        stages = RunFolder(result.run_dir).state["stages"]
        self._recorded["selection"].add(f"{method}/s{seed}")
        self.results["selection"][f"{method}/s{seed}"] = {
            "method": method, "seed": seed, "overhead": float(result.selection_overhead),
            "timings": {k: float(v) for k, v in result.timings.items()},
            "adopted": [k for k in result.timings if "adopted_from" in stages.get(k, {})],
            "rates": sorted(float(p) for p in result.ids), "run_dir": str(result.run_dir)}
        self._save()
        return result

    def _other_seeds(self, methods: set[str], rates: list[float]) -> set[Path]:
        """Every seed's selection folder of these methods, here or in the archive. With stage 1
        held fixed they all hold the same stage 1 (the fingerprints decide what is taken): the
        baselines' train-target and score-target are archived under whichever seed ran them
        first (CCS seed 2 on Multi30k), and seed 0 must not fine-tune the full data again."""
        found = set()
        for m in methods:
            parent = Path(self.cfg.selection_config(m, 0, rates).output_dir).parent
            roots = [parent]
            if self.cfg.resume_from:
                roots.append(Path(self.cfg.resume_from) / SELECT
                             / parent.relative_to(self.out / SELECT))
            for root in roots:
                if root.is_dir():
                    found |= {parent / d.name for d in root.iterdir()
                              if d.is_dir() and d.name[1:].isdigit() and d.name[0] == "s"}
        return found

    def _untuned(self, folder: Path) -> None:
        te = self.train_eval
        if self._restored("untuned", None, decode=True, folder=folder):
            return
        with turn_lock(folder):
            loss, metrics = te.held_out_loss(folder), te.evaluate(folder)
        self._record("untuned", None, None, "epochs", None, loss, metrics, folder)

    def _cell(self, method: str, rate: float, seed: int, ids: list[str] | None,
              folder: Path, protocol: str, decode: bool) -> None:
        with turn_lock(folder):  # another process on the same cell: wait, then reuse it
            self._run_cell(method, rate, seed, ids, folder, protocol, decode)

    def _run_cell(self, method: str, rate: float, seed: int, ids: list[str] | None,
                  folder: Path, protocol: str, decode: bool) -> None:
        te = self.train_eval
        # The steps protocol: exactly the full-data cell's optimiser steps, over the coreset.
        steps = te.planned_steps() if protocol == "steps" and ids is not None else None
        key = cell_key(method, rate, seed, protocol)
        if self.cfg.resume_from and self._restored(
                key, te.finetune_fingerprint(te.subset(ids), seed, steps), decode,
                folder / EVAL_DIR):
            return
        tuned = te.finetune(folder, ids, seed, steps=steps)
        loss = te.held_out_loss(folder / EVAL_DIR, tuned.adapter_dir, tuned.model)
        metrics = (te.evaluate(folder / EVAL_DIR, tuned.adapter_dir, tuned.model) if decode
                   else None)
        tuned.model = None  # free the tuned model before the next cell
        self._record(method, rate, seed, protocol, tuned.info, loss, metrics, folder / EVAL_DIR)

    def _restored(self, key: str, train_fp: str | None, decode: bool, folder: Path) -> bool:
        """Whether the cell ``key`` was measured on another machine and restored from
        ``resume_from`` (this machine has no evaluation of it): the same fine-tuning (its
        fingerprint; the bench fingerprint covers the evaluation) and, if decoded here, decoded
        there. Such a cell is not redone."""
        entry = self.results["cells"].get(key)
        if not self.cfg.resume_from or not entry or (folder / METRICS).is_file() or (
                folder / HELD_OUT_LOSS).is_file():
            return False
        if train_fp is not None and entry.get("train_fingerprint") != train_fp:
            return False
        if decode and entry.get("rouge_l") is None:
            return False
        log.info("%s: recorded in %s (same inputs), not redone", key, self.cfg.resume_from)
        return True

    def _record(self, method, rate, seed, protocol: str, train_info: dict | None, loss: dict,
                metrics: dict | None, eval_dir: Path) -> None:
        key = cell_key(method, rate, seed, protocol)
        self.results["cells"][key] = cell_entry(method, rate, seed, protocol, train_info, loss,
                                                metrics, self.results["cells"].get(key, {}))
        self._recorded["cells"].add(key)
        self._recorded["per_example"].add(key)
        self.results["per_example"][key] = per_example_entry(
            loss, metrics, eval_dir, self.results["per_example"].get(key, {}))
        self._save()
        write_cells_csv(self.out / "cells.csv", self.results, self.cfg)
        log.info("%s: loss %.4f%s", key, loss["loss"], f", ROUGE-L {metrics['rouge_l']:.2f}, "
                 f"BLEU-4 {metrics['bleu']:.2f}" if metrics else "")

    def write_tables(self) -> Path:
        """tables.md and cells.csv for the config's whole grid (cells not run yet print
        '–' in the tables and have no rows in the CSV)."""
        # A folder resumed from a published copy may have no selection run of its own yet
        # (e.g. ``--tables-only`` on a fresh machine); the copy's ``select/`` then names N.
        source = self.out
        if self.cfg.resume_from and full_size(self.results, self.out) == "":
            source = Path(self.cfg.resume_from)
        return write_tables(self.results, self.cfg, self.out, source)


def write_tables(results: dict, cfg: BenchConfig, out: Path, source: Path | None = None) -> Path:
    """``out``/tables.md and ``out``/cells.csv from a results store; ``source``: the bench
    folder the results came from (its selection runs name N), when ``out`` is a copy."""
    cells = results["cells"].values()
    configured = {m for part in cfg.grid_parts() for m in part.methods}
    ran = {e["method"] for e in cells if e["method"] not in ("full", "untuned")}
    methods = row_order(configured | ran)
    rates = sorted({*cfg.all_rates(), *(e["rate"] for e in cells
                                       if e["method"] not in ("full", "untuned"))})
    seeds = sorted({*cfg.seeds, *(s for part in cfg.grid_parts() for s in part.seeds),
                    *(e["seed"] for e in cells if e["seed"] is not None)})
    path = Path(out) / "tables.md"
    text = render(results, methods, rates, seeds, cfg.title, stage1_seed=cfg.stage1_seed,
                  n_train=full_size(results, source or Path(out)) or None)
    note = mixed_versions_note(cells)
    write_atomic(path, f"{note}\n\n{text}" if note else text)
    write_cells_csv(Path(out) / "cells.csv", results, cfg, source)
    return path


def run_bench(cfg: BenchConfig, methods: list[str] | None = None,
              rates: list[float] | None = None, seeds: list[int] | None = None,
              show_progress: bool = True, protocol: str | None = None) -> dict:
    """Python API of ``staff bench``."""
    return Grid(cfg, show_progress=show_progress).run(methods, rates, seeds, protocol)
