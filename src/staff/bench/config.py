"""Config of a benchmark grid: selection methods x pruning rates x seeds for one
(small model, target, dataset), the way the paper's Tables 1 and 2 were made.

``select`` is a whole selection run config (``staff show-config``): data, small, target, their
LoRA and fine-tuning (T), scoring and selection options. The grid sets its ``seed``,
``output_dir``, ``selection.method`` and ``selection.pruning_rates`` per cell. ``lora``,
``finetune`` and ``eval`` are the evaluation protocol: the target is LoRA-fine-tuned on every
coreset (and on the full data) and evaluated on the held-out split.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (ConfigError, FinetuneConfig, LoraConfig, RunConfig, SelectionConfig,
                      _build, _f)
from ..evaluation.config import (PAPER_FINETUNE, EvalConfig, TrainEvalConfig, apply_overrides,
                                 merge_defaults, read_yaml)

METHODS: tuple[str, ...] = typing.get_args(typing.get_type_hints(SelectionConfig)["method"])
# The paper's row order (Table 1): baselines, then STAFF.
ROW_ORDER = ("random", "grand", "el2n", "ccs", "d2", "staff")
TARGET_SCORED = ("grand", "el2n", "ccs", "d2")  # baselines that fine-tune and score the target


@dataclass
class BenchConfig:
    select: Any = _f(None, "The selection run config (a RunConfig tree: data, small, target, "
                           "lora, finetune, scoring, selection, ...). seed, output_dir, "
                           "selection.method and selection.pruning_rates are set by the grid.")
    lora: LoraConfig = field(default_factory=LoraConfig)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(**PAPER_FINETUNE))
    eval: EvalConfig = field(default_factory=EvalConfig)
    methods: list = _f(list(ROW_ORDER), f"Selection methods, of: {', '.join(METHODS)}.")
    pruning_rates: list = _f([0.2, 0.5, 0.7, 0.8, 0.9], "Pruning rates p in (0, 1) (paper: "
                                                         "20% to 90%).")
    seeds: list = _f([0], "Seeds: each seeds selection and the fine-tuning on its coreset.")
    title: str = _f("", "A line naming the setting, printed above the tables.")
    output_dir: str = _f("runs/bench", "Folder of every artifact; re-running resumes it.")
    reference_cells: str = _f("", "output_dir of another bench with the same data, target and "
                                  "evaluation protocol (e.g. one that differs only in "
                                  "select.small): its untuned and full-data cells are reused, "
                                  "not recomputed.")

    def __post_init__(self) -> None:
        if not isinstance(self.select, RunConfig):
            raise ConfigError("select is missing: give the selection run config (data, small, "
                              "target, ...) under 'select:'.")
        self.methods = check_methods(self.methods)
        self.pruning_rates = check_rates(self.pruning_rates)
        self.seeds = check_seeds(self.seeds)
        self.train_eval()  # cross-section checks (eval.max_new_tokens < data.cutoff_len)

    def train_eval(self) -> TrainEvalConfig:
        """The fine-tune/evaluate config of the grid's cells: the target on select's data."""
        s = self.select
        return TrainEvalConfig(data=s.data, eval=self.eval, model=s.target, lora=self.lora,
                               finetune=self.finetune, seed=self.seeds[0],
                               output_dir=str(Path(self.output_dir) / "cells"), device=s.device)

    def selection_config(self, method: str, seed: int, rates: list[float]) -> RunConfig:
        """The selection run of one (method, seed) under output_dir/select. GraNd, EL2N, CCS and
        D2 share one folder per seed, so they share the fine-tuned and scored target (as in the
        paper; each one's overhead still counts those stages); only their pick differs."""
        from ..config import config_from_dict

        tree = self.select.to_dict()
        tree["selection"]["method"] = method
        tree["selection"]["pruning_rates"] = sorted(rates)
        tree["seed"] = seed
        folder = "baselines" if method in TARGET_SCORED else method
        tree["output_dir"] = str(Path(self.output_dir) / "select" / folder / f"s{seed}")
        return config_from_dict(tree)

    def to_dict(self) -> dict:
        tree = dataclasses.asdict(self)
        tree["select"] = self.select.to_dict()
        return tree


def check_methods(methods) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods or [])
    if not methods:
        raise ConfigError("methods is empty, give at least one of: " + ", ".join(METHODS) + ".")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"methods contains {m!r}, must be one of {', '.join(METHODS)}.")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods == {methods}, has duplicates.")
    return methods


def check_rates(rates) -> list[float]:
    rates = [rates] if isinstance(rates, (int, float, str)) else list(rates or [])
    out = []
    for p in rates:
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise ConfigError(f"pruning_rates contains {p!r}, must be numbers in (0, 1).") from None
        if not 0.0 < p < 1.0:
            raise ConfigError(f"pruning_rates contains {p}, must be in (0, 1).")
        out.append(p)
    if not out:
        raise ConfigError("pruning_rates is empty, give at least one rate.")
    if len({round(p, 6) for p in out}) != len(out):
        raise ConfigError(f"pruning_rates == {out}, has duplicates.")
    return out


def check_seeds(seeds) -> list[int]:
    seeds = [seeds] if isinstance(seeds, (int, str)) else list(seeds or [])
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, str)) or not str(s).lstrip("-").isdigit():
            raise ConfigError(f"seeds contains {s!r}, must be integers.")
        out.append(int(s))
    if not out:
        raise ConfigError("seeds is empty, give at least one seed.")
    if len(set(out)) != len(out):
        raise ConfigError(f"seeds == {out}, has duplicates.")
    return out


def load_bench_config(path: str | Path, overrides: dict | list | None = None) -> BenchConfig:
    """BenchConfig from a YAML file and ``key=value`` overrides (``select.data.max_samples=100``,
    ``eval.max_samples=50``); unknown options are errors, naming their section."""
    tree = apply_overrides(read_yaml(path), overrides)
    tree = merge_defaults({"finetune": PAPER_FINETUNE}, tree)
    select = tree.pop("select", None)
    if not isinstance(select, dict) or not select:
        raise ConfigError(f"{path}: 'select' is missing: give the selection run config (data, "
                          "small, target, ...) under 'select:'.")
    # The grid sets these; a value in the file would silently be ignored.
    given = {f"selection.{k}" for k in (select.get("selection") or {})} | set(select)
    for key, instead in (("selection.method", "methods"), ("selection.pruning_rates",
                         "pruning_rates"), ("seed", "seeds"), ("output_dir", "output_dir")):
        if key in given:
            raise ConfigError(f"select.{key} is set by the grid: use the top-level {instead} "
                              "instead.")
    tree["select"] = _build(RunConfig, select, "select.")
    return _build(BenchConfig, tree, "")
