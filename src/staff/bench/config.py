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
                      build, load_tree)
from ..config import option as _f
from ..evaluation.config import PAPER_FINETUNE, EvalConfig, TrainEvalConfig

METHODS: tuple[str, ...] = typing.get_args(typing.get_type_hints(SelectionConfig)["method"])
# The paper's row order (Table 1): baselines, then STAFF (its variants after it).
ROW_ORDER = ("random", "length", "grand", "el2n", "ccs", "d2", "staff")
TARGET_SCORED = ("grand", "el2n", "ccs", "d2")  # baselines that fine-tune and score the target
PROTOCOLS = ("epochs", "steps")


def base_method(method: str) -> str:
    """'staff' for 'staff:draft': a variant runs its base method with other options."""
    return method.split(":", 1)[0]


def row_order(methods) -> list[str]:
    """Methods in the paper's order, each variant right after its base method."""
    def key(m):
        base = base_method(m)
        return (ROW_ORDER.index(base) if base in ROW_ORDER else len(ROW_ORDER), m != base, m)

    return sorted(methods, key=key)


@dataclass
class Part:
    """A piece of the grid: these methods x rates x seeds, trained under one protocol."""

    methods: list
    rates: list
    seeds: list
    protocol: str = "epochs"
    decode: bool | None = None   # None: decode the rates in decode_rates


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (_deep_merge(out[key], value)
                    if isinstance(value, dict) and isinstance(out.get(key), dict) else value)
    return out


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
    protocol: str = _f("epochs", "How a cell is fine-tuned: 'epochs' (the paper's: finetune."
                                 "epochs over the coreset) or 'steps' (as many optimiser steps "
                                 "as the full-data cell, cycling over the coreset: separates "
                                 "'which samples' from 'how many steps').")
    parts: list = _f([], "The grid as a list of parts, each {methods, rates, seeds, protocol, "
                         "decode}; a key left out takes the top-level value. Empty: one part "
                         "of the top-level methods x pruning_rates x seeds.")
    decode_rates: list | None = _f(None, "Pruning rates whose cells are also decoded (ROUGE-L, "
                                         "BLEU-4); every cell gets the held-out loss. null: "
                                         "all rates. Full-data and untuned cells are always "
                                         "decoded.")
    variants: dict = _f({}, "Named variants of a method: {name: overrides of select}, run as "
                            "method 'BASE:name', e.g. variants: {draft: {small: {name: "
                            "runs/draft/x}}} and methods: [staff:draft].")
    stage1_seed: int | None = _f(None, "Hold stage 1 fixed: every seed's selection fine-tunes "
                                       "and scores the full data with this seed (then seeds "
                                       "vary only the draws and the fine-tuning on the "
                                       "coreset); tables say so. null: each seed its own.")
    dataset: str = _f("", "Dataset name in cells.csv (default: the data file's folder name).")
    full_seeds: list | None = _f(None, "Seeds of the full-data reference cell; null: every "
                                       "seed a part runs (a few are enough for a reference "
                                       "line, and each costs a full fine-tuning); []: none "
                                       "(e.g. another process of the bench runs it).")
    title: str = _f("", "A line naming the setting, printed above the tables.")
    output_dir: str = _f("runs/bench", "Folder of every artifact; re-running resumes it.")
    reference_cells: str = _f("", "output_dir of another bench with the same data, target and "
                                  "evaluation protocol (e.g. one that differs only in "
                                  "select.small): its untuned and full-data cells are reused, "
                                  "not recomputed.")
    resume_from: str = _f("", "A published copy of this bench (bench/publish.py's DEST: "
                              "results.json and select/): on a machine without the bench "
                              "folder, its selection runs (no weights) are restored and its "
                              "recorded cells count as done, where their inputs match "
                              "(staff.bench.archive).")

    def __post_init__(self) -> None:
        if not isinstance(self.select, RunConfig):
            raise ConfigError("select is missing: give the selection run config (data, small, "
                              "target, ...) under 'select:'.")
        if not isinstance(self.variants, dict) or not all(
                isinstance(k, str) and k and isinstance(v, dict) for k, v in self.variants.items()):
            raise ConfigError("variants must map a name to a dict of select overrides, e.g. "
                              "{draft: {small: {name: runs/draft/x}}}.")
        self.methods = check_methods(self.methods, self.variants)
        self.pruning_rates = check_rates(self.pruning_rates)
        self.seeds = check_seeds(self.seeds)
        self.protocol = check_protocol(self.protocol)
        if self.decode_rates is not None:
            self.decode_rates = check_rates(self.decode_rates, "decode_rates")
        if self.stage1_seed is not None:
            self.stage1_seed = check_seeds([self.stage1_seed])[0]
        if self.full_seeds:  # [] runs no full-data cell (another process does)
            self.full_seeds = check_seeds(self.full_seeds)
        self.parts = [self._part(i, p) for i, p in enumerate(self.parts or [])]
        for method in {m for part in self.grid_parts() for m in part.methods}:
            self.selection_config(method, 0, self.pruning_rates)  # variants must build
        self.train_eval()  # cross-section checks (eval.max_new_tokens < data.cutoff_len)

    def _part(self, i: int, part) -> Part:
        if isinstance(part, Part):
            return part
        if not isinstance(part, dict):
            raise ConfigError(f"parts[{i}] == {part!r}, must be a mapping of methods, rates, "
                              "seeds, protocol, decode.")
        unknown = set(part) - {"methods", "rates", "seeds", "protocol", "decode"}
        if unknown:
            raise ConfigError(f"parts[{i}] has unknown key(s) {sorted(unknown)}; known: "
                              "methods, rates, seeds, protocol, decode.")
        decode = part.get("decode")
        if decode is not None and not isinstance(decode, bool):
            raise ConfigError(f"parts[{i}].decode == {decode!r}, must be true, false or null.")
        return Part(methods=check_methods(part.get("methods", self.methods), self.variants),
                    rates=check_rates(part.get("rates", self.pruning_rates)),
                    seeds=check_seeds(part.get("seeds", self.seeds)),
                    protocol=check_protocol(part.get("protocol", self.protocol)), decode=decode)

    def grid_parts(self) -> list[Part]:
        """The parts to run, in order (the most informative cells first, as the file lists)."""
        return self.parts or [Part(self.methods, self.pruning_rates, self.seeds, self.protocol)]

    def all_rates(self) -> list[float]:
        return sorted({*self.pruning_rates, *(p for part in self.grid_parts()
                                              for p in part.rates)})

    def decoded(self, rate: float, part: Part | None = None) -> bool:
        if part is not None and part.decode is not None:
            return part.decode
        return self.decode_rates is None or any(abs(rate - p) < 1e-9
                                                for p in self.decode_rates)

    def dataset_name(self) -> str:
        return self.dataset or Path(self.select.data.path).parent.name or self.select.data.path

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
        base, _, variant = method.partition(":")
        if variant:
            over = self.variants[variant]
            for key in ("seed", "output_dir", "stage1_seed"):
                if key in over:
                    raise ConfigError(f"variants.{variant}.{key} is set by the grid.")
            if {"method", "pruning_rates"} & set(over.get("selection") or {}):
                raise ConfigError(f"variants.{variant}: selection.method and pruning_rates "
                                  "are set by the grid.")
            tree = _deep_merge(tree, over)
        tree["selection"]["method"] = base
        tree["selection"]["pruning_rates"] = sorted(rates)
        tree["seed"] = seed
        tree["stage1_seed"] = self.stage1_seed
        folder = "baselines" if method in TARGET_SCORED else method.replace(":", "-")
        tree["output_dir"] = str(Path(self.output_dir) / "select" / folder / f"s{seed}")
        try:
            return config_from_dict(tree)
        except ConfigError as err:
            if not variant:
                raise
            raise ConfigError(f"variants.{variant}: {err}") from None

    def to_dict(self) -> dict:
        tree = dataclasses.asdict(self)
        tree["select"] = self.select.to_dict()
        tree["parts"] = [dataclasses.asdict(p) for p in self.parts]
        return tree


def check_protocol(protocol) -> str:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol == {protocol!r}, must be one of {', '.join(PROTOCOLS)}.")
    return protocol


def check_methods(methods, variants: dict | None = None) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods or [])
    if not methods:
        raise ConfigError("methods is empty, give at least one of: " + ", ".join(METHODS) + ".")
    for m in methods:
        base, colon, variant = str(m).partition(":")
        if base not in METHODS:
            raise ConfigError(f"methods contains {m!r}, must be one of {', '.join(METHODS)} "
                              "(or METHOD:VARIANT with a name from variants).")
        if colon and variant not in (variants or {}):
            raise ConfigError(f"methods contains {m!r}, but variants has no {variant!r} "
                              f"(it has: {', '.join(variants or {}) or 'none'}).")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"methods == {methods}, has duplicates.")
    return methods


def check_rates(rates, name: str = "pruning_rates") -> list[float]:
    rates = [rates] if isinstance(rates, (int, float, str)) else list(rates or [])
    out = []
    for p in rates:
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} contains {p!r}, must be numbers in (0, 1).") from None
        if not 0.0 < p < 1.0:
            raise ConfigError(f"{name} contains {p}, must be in (0, 1).")
        out.append(p)
    if not out:
        raise ConfigError(f"{name} is empty, give at least one rate.")
    if len({round(p, 6) for p in out}) != len(out):
        raise ConfigError(f"{name} == {out}, has duplicates.")
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
    tree = load_tree(path, overrides, data_sections=("select.data", "eval"),
                     defaults={"finetune": PAPER_FINETUNE})
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
    tree["select"] = build(RunConfig, select, "select.")
    return build(BenchConfig, tree)
