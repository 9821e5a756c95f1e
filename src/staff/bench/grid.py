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
  results.json                  every finished cell and selection run (the tables' source)
  tables.md                     Tables 1a (ROUGE-L), 1b (BLEU-4) and 2 (selection overhead)

A cell whose adapter and metrics exist with the same inputs (fingerprints over the config, the
coreset's ids and the data) is skipped, so a second call does no work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import yaml

from ..config import FINETUNE_NO_EFFECT
from ..runfolder import RunFolder, fingerprint, write_atomic, write_json
from .config import ROW_ORDER, BenchConfig, check_methods, check_rates, check_seeds
from .shared_stages import adopt_shared_stages
from .tables import cell_key, render

log = logging.getLogger(__name__)


def bench_fingerprint(cfg: BenchConfig) -> str:
    """What every cell shares; results.json from other settings is not reused."""
    sel = cfg.select.to_dict()
    for key in ("output_dir", "seed", "report", "device"):
        sel.pop(key, None)
    sel["selection"] = {k: v for k, v in sel["selection"].items()
                        if k not in ("method", "pruning_rates")}
    fin = {k: v for k, v in dataclasses.asdict(cfg.finetune).items()
           if k not in FINETUNE_NO_EFFECT}
    ev = {k: v for k, v in dataclasses.asdict(cfg.eval).items()
          if k not in ("batch_size", "threads")}
    return fingerprint(sel, dataclasses.asdict(cfg.lora), fin, ev)


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
        self.results = self._load_results()

    def _load_results(self) -> dict:
        fp = bench_fingerprint(self.cfg)
        try:
            results = json.loads(self.results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = {}
        if results and results.get("fingerprint") != fp:
            log.warning("%s was made with other settings: its cells are not reused in the "
                        "tables (the cached artifacts are still checked cell by cell)",
                        self.results_path)
            results = {}
        results.setdefault("fingerprint", fp)
        for key in ("cells", "selection"):
            results.setdefault(key, {})
        results.setdefault("runs", [])
        return results

    def _save(self) -> None:
        write_json(self.results_path, self.results)

    # ---------------------------------------------------------------- the grid
    def run(self, methods: list[str] | None = None, rates: list[float] | None = None,
            seeds: list[int] | None = None) -> dict:
        """Run (or take from the cache) the cells of ``methods x rates x seeds`` (default: the
        config's), the full-data cell of every seed and the untuned target; write results.json
        and tables.md. Returns the results store."""
        c = self.cfg
        methods = check_methods(methods) if methods else c.methods
        rates = check_rates(rates) if rates else c.pruning_rates
        seeds = check_seeds(seeds) if seeds else c.seeds
        # Selection covers the config's rates too, so that a partial call leaves the selection
        # run folder as the full grid wants it (the pick stage is cheap; the rest is shared).
        select_rates = sorted({*c.pruning_rates, *rates})
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "bench.yaml", yaml.safe_dump(c.to_dict(), sort_keys=False,
                                                              allow_unicode=True))
        cells = self.out / "cells"
        log.info("bench %s: methods %s, rates %s, seeds %s", self.out, methods, rates, seeds)
        reference = self._reference_cells() or cells
        self._record("untuned", None, None, None, self.train_eval.evaluate(
            reference / "untuned" / "eval"))
        for seed in seeds:
            self._cell("full", 0.0, seed, None, reference / "full" / f"s{seed}")
        for seed in seeds:
            for method in methods:
                result = self._select(method, seed, select_rates)
                for p in rates:
                    self._cell(method, p, seed, _pick(result.ids, p),
                               cells / method / f"p{p:.2f}" / f"s{seed}")
        seconds = time.perf_counter() - started
        self.results["runs"].append({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                     "seconds": round(seconds, 1), "methods": methods,
                                     "rates": rates, "seeds": seeds})
        self._save()
        self.write_tables()
        log.info("bench done in %.1f s -> %s", seconds, self.out / "tables.md")
        return self.results

    def _reference_cells(self) -> Path | None:
        """The cells folder of ``reference_cells``, after checking that its untuned and
        full-data cells were made with this bench's protocol (else they would be redone there,
        over the other bench's results)."""
        from ..config import ConfigError

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
        from ..pipeline import select

        run_cfg = self.cfg.selection_config(method, seed, rates)
        log.info("selection %s (seed %d) in %s", method, seed, run_cfg.output_dir)
        # With the small model = the target, STAFF's stage 1 is the baselines' fine-tuning.
        donors = {Path(self.cfg.selection_config(m, seed, rates).output_dir)
                  for m in ("staff", "grand")} - {Path(run_cfg.output_dir)}
        adopt_shared_stages(run_cfg, sorted(donors))
        result = select(run_cfg, show_progress=self.show_progress)
        stages = RunFolder(result.run_dir).state["stages"]
        self.results["selection"][f"{method}/s{seed}"] = {
            "method": method, "seed": seed, "overhead": float(result.selection_overhead),
            "timings": {k: float(v) for k, v in result.timings.items()},
            "adopted": [k for k in result.timings if "adopted_from" in stages.get(k, {})],
            "rates": sorted(float(p) for p in result.ids), "run_dir": str(result.run_dir)}
        self._save()
        return result

    def _cell(self, method: str, rate: float, seed: int, ids: list[str] | None,
              folder: Path) -> None:
        tuned = self.train_eval.finetune(folder, ids, seed)
        metrics = self.train_eval.evaluate(folder / "eval", tuned.adapter_dir, tuned.model)
        tuned.model = None  # free the tuned model before the next cell
        self._record(method, rate, seed, tuned.info, metrics)

    def _record(self, method, rate, seed, train_info: dict | None, metrics: dict) -> None:
        entry = {"method": method, "rate": rate, "seed": seed,
                 "rouge_l": metrics["rouge_l"], "bleu": metrics["bleu"], "n_eval": metrics["n"],
                 "eval_seconds": metrics.get("seconds")}
        if train_info:
            entry.update(n_train=train_info["samples"],
                         finetune_seconds=train_info.get("seconds"),
                         final_loss=train_info.get("final_loss"))
        self.results["cells"][cell_key(method, rate, seed)] = entry
        self._save()
        log.info("%s: ROUGE-L %.2f, BLEU-4 %.2f", cell_key(method, rate, seed),
                 metrics["rouge_l"], metrics["bleu"])

    def write_tables(self) -> Path:
        """tables.md for the config's whole grid (cells not run yet print '–')."""
        c = self.cfg
        methods = [m for m in ROW_ORDER if m in c.methods]
        extra_rates = {e["rate"] for e in self.results["cells"].values()
                       if e["method"] not in ("full", "untuned")}
        rates = sorted({*c.pruning_rates, *extra_rates})
        ran = {e["method"] for e in self.results["cells"].values()}
        methods += [m for m in ROW_ORDER if m in ran and m not in methods]
        seeds = sorted({*c.seeds, *(e["seed"] for e in self.results["cells"].values()
                                    if e["seed"] is not None)})
        path = self.out / "tables.md"
        write_atomic(path, render(self.results, methods, rates, seeds, c.title))
        return path


def run_bench(cfg: BenchConfig, methods: list[str] | None = None,
              rates: list[float] | None = None, seeds: list[int] | None = None,
              show_progress: bool = True) -> dict:
    """Python API of ``staff bench``."""
    return Grid(cfg, show_progress=show_progress).run(methods, rates, seeds)
