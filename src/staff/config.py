"""Run configuration: one dataclass per stage, loaded from YAML with dotted overrides.

Every field has a help string (``metadata["help"]``); cross-field rules live in ``__post_init__``
and raise ``ValueError`` naming the option, the value and the rule. Unknown keys are errors.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad option value or an unknown option; the message names the option."""


def option(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its help string (every schema of the project declares with it)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


_f = option  # short, so that the help strings below stay aligned


@dataclass
class DataConfig:
    path: str = _f("", "JSONL/JSON/CSV/Parquet file, a folder saved with datasets.save_to_disk, "
                       "or a hub dataset name ('demo' = the generated demo dataset).")
    split: str = _f("train", "Split to read from a hub dataset or a DatasetDict folder.")
    hub_config: str | None = _f(None, "Config (subset) name of a hub dataset.")
    format: Literal["auto", "alpaca", "prompt_completion", "messages", "template"] = _f(
        "auto", "How rows map to prompt/response. 'auto' detects alpaca "
                "(instruction/input/output), prompt/completion and chat messages; 'template' "
                "uses prompt_template/response_template.")
    prompt_template: str | None = _f(None, "Python format string over row fields, e.g. "
                                           "'Summarize the dialogue:\\n{dialogue}'.")
    response_template: str | None = _f(None, "Format string for the response, e.g. '{summary}'.")
    id_field: str = _f("id", "Field holding a stable sample id; rows without it use their row "
                             "number.")
    chat_template: bool = _f(False, "Wrap prompt/response with the tokenizer's chat template.")
    cutoff_len: int = _f(512, "Max tokens per sample. Longer samples are truncated: the prompt "
                              "is cut from the left first (keeping its end), then the response "
                              "from the right; the count is logged.")
    max_samples: int | None = _f(None, "Use only the first N rows (after reading).")
    demo_size: int = _f(240, "Rows of the generated demo dataset (path: demo).")

    def __post_init__(self) -> None:
        if self.cutoff_len < 8:
            raise ConfigError(f"data.cutoff_len == {self.cutoff_len}, must be >= 8.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"data.max_samples == {self.max_samples}, must be >= 1.")
        if self.format == "template" and not (self.prompt_template and self.response_template):
            raise ConfigError("data.format == 'template' needs data.prompt_template and "
                              "data.response_template.")


@dataclass
class ModelConfig:
    name: str = _f("", "Hub id, local folder, path to a .gguf file, or an offline demo model "
                       "('offline:smollm2-135m-instruct', 'offline:gemma-3-270m').")
    revision: str | None = _f(None, "Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "'auto': bfloat16 on CUDA with bf16 support, float16 on other CUDA, float32 "
                "on CPU/MPS.")
    quantization: Literal["none", "8bit", "4bit"] = _f(
        "none", "Load the base weights in 8/4 bit with bitsandbytes (CUDA only).")


@dataclass
class LoraConfig:
    r: int = _f(8, "LoRA rank.")
    alpha: int = _f(16, "LoRA alpha (scaling = alpha / r).")
    dropout: float = _f(0.05, "LoRA dropout during fine-tuning (always 0 while scoring).")
    target_modules: Any = _f("all-linear", "Module names to adapt, or 'all-linear'.")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r == {self.r}, must be >= 1.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout == {self.dropout}, must be in [0, 1).")
        if self.alpha <= 0:  # scaling alpha/r == 0: every effort score 0, a random pick
            raise ConfigError(f"lora.alpha == {self.alpha}, must be > 0.")
        modules = self.target_modules
        if isinstance(modules, tuple):
            modules = self.target_modules = list(modules)
        if not ((isinstance(modules, str) and modules.strip()) or (
                isinstance(modules, list) and modules
                and all(isinstance(m, str) and m.strip() for m in modules))):
            raise ConfigError(f"lora.target_modules == {modules!r}, must be 'all-linear', a "
                              "module name, or a non-empty list of module names.")


@dataclass
class FinetuneConfig:
    epochs: float = _f(3, "Epochs T of LoRA fine-tuning of the small model (paper: 3).")
    learning_rate: float = _f(2e-4, "Peak learning rate (AdamW).")
    batch_size: int = _f(8, "Samples per micro-batch (per process).")
    grad_accum: int = _f(1, "Micro-batches per optimiser step.")
    warmup_ratio: float = _f(0.1, "Fraction of steps with linear warm-up, then cosine decay.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping (0 disables).")
    checkpoint_every: int = _f(50, "Optimiser steps between resumable checkpoints (also one at "
                                   "each epoch end); does not change the result.")
    gradient_checkpointing: bool = _f(False, "Recompute each layer's activations in the "
                                             "backward pass instead of keeping them: much less "
                                             "memory for long sequences or a large target, "
                                             "about a third more compute; does not change the "
                                             "result.")

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ConfigError(f"finetune.epochs == {self.epochs}, must be > 0.")
        if self.learning_rate <= 0:
            raise ConfigError(f"finetune.learning_rate == {self.learning_rate}, must be > 0.")
        if self.weight_decay < 0:
            raise ConfigError(f"finetune.weight_decay == {self.weight_decay}, must be >= 0.")
        if self.max_grad_norm < 0:  # a negative clip norm flips the gradient: ascent
            raise ConfigError(f"finetune.max_grad_norm == {self.max_grad_norm}, must be >= 0 "
                              "(0 disables clipping).")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("finetune.batch_size and finetune.grad_accum must be >= 1.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"finetune.warmup_ratio == {self.warmup_ratio}, must be in [0, 1).")
        if self.checkpoint_every < 1:
            raise ConfigError(f"finetune.checkpoint_every == {self.checkpoint_every}, "
                              "must be >= 1.")


# FinetuneConfig options that change how fine-tuning runs, not what it computes: changing them
# must not redo finished work (they stay out of every fingerprint).
FINETUNE_NO_EFFECT = ("checkpoint_every", "gradient_checkpointing")


@dataclass
class ScoringConfig:
    scope: Literal["all", "last-layer"] = _f(
        "all", "Parameters of the effort score: every LoRA tensor ('all'), or the last decoder "
               "layer's LoRA tensors ('last-layer', close to the authors' code).")
    batch_size: int = _f(8, "Samples per scoring batch (batches are length-bucketed).")
    shard_size: int = _f(1024, "Samples per resumable shard of scores written while scoring; "
                               "does not change the result.")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"scoring.batch_size == {self.batch_size}, must be >= 1.")
        if self.shard_size < 1:
            raise ConfigError(f"scoring.shard_size == {self.shard_size}, must be >= 1.")


@dataclass
class EarlyStopConfig:
    rho: float = _f(0.0, "Stop stage 1's fine-tuning (train-small; train-target for the "
                         "baselines) once the effort ranks have settled: when Spearman's rho "
                         "between a probe's effort at two consecutive checks reaches this, e.g. "
                         "0.95. 0: train all finetune.epochs (the paper). docs/method.md.")
    every: float = _f(0.5, "Epochs between checks; the first comparison comes at 2 x every.")
    probe: int = _f(256, "Samples, drawn with the stage-1 seed, whose effort each check scores.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.rho < 1.0:
            raise ConfigError(f"early_stop.rho == {self.rho}, must be in [0, 1) (0: off).")
        if self.every <= 0:
            raise ConfigError(f"early_stop.every == {self.every}, must be > 0 (epochs).")
        if self.probe < 10:  # fewer ranks than this make rho too noisy to decide on
            raise ConfigError(f"early_stop.probe == {self.probe}, must be >= 10.")


@dataclass
class SelectionConfig:
    method: Literal["staff", "random", "grand", "el2n", "ccs", "d2", "length"] = _f(
        "staff", "Selection method. Baselines grand/el2n/ccs/d2 fine-tune the TARGET on the full "
                 "data and score all N samples on it (the overhead STAFF avoids); random "
                 "needs no model; length keeps the samples with the most response tokens "
                 "(the target's tokenizer; no model).")
    pruning_rates: list = _f([0.5], "Pruning rates p in (0, 1); coreset size m = floor(N(1-p)).")
    score: Literal["effort", "el2n", "loss"] = _f(
        "effort", "STAFF's speculative and verification score (paper: effort; Table 13: others).")
    verify: bool = _f(True, "STAFF verifies regions on the target; false: every V_i = 1 "
                            "(ablation 'w/o verification', paper Table 3).")
    speculative: Literal["small", "untuned-target"] = _f(
        "small", "Where STAFF's speculative scores come from: the fine-tuned small model, or the "
                 "untuned target (ablation 'w/o small model', paper Table 3).")
    ccs_strata: int = _f(50, "CCS: equal-width strata over EL2N.")
    ccs_hard_cutoff: float = _f(0.0, "CCS: drop this top fraction by EL2N first (beta).")
    d2_k: int = _f(5, "D2 Pruning: neighbours in the kNN graph.")
    d2_gamma: float = _f(0.1, "D2 Pruning: reverse message passing weight gamma.")
    regions: int | None = _f(None, "K: regions of equal width over the speculative scores "
                                   "(paper: 50). Unset: scaled to N, K = min(50, max(1, "
                                   "N // 20)) (logged).")
    verify_per_region: int | None = _f(None, "b_v: samples per region scored on the target "
                                             "(paper: 10). Unset: scaled to N, b_v = min(10, "
                                             "max(1, min(500, N // 10) // K)): the target "
                                             "scores at most 10% of N (logged).")
    normalize: Literal["mean", "minmax", "none"] = _f(
        "mean", "Score normalisation before V_i. 'mean': each model's scores divided by their "
                "mean over all verified samples; 'minmax': min-max over the verified samples; "
                "'none': raw (V_i then carries the two models' scale gap).")
    budget_rule: Literal["paper", "share"] = _f(
        "paper", "'paper': m_B = floor((m-|D'|) V_i / |B|) (Eq. 4); 'share': "
                 "floor((m-|D'|) V_i / sum of V over unvisited regions) (authors' code).")
    within_region: Literal["random", "top"] = _f(
        "random", "'random' draw inside a region (paper) or the 'top' speculative scores "
                  "(authors' code).")
    hard_prune: float = _f(0.0, "Drop this top fraction by speculative score first (authors' "
                                "code used 0.1; the paper does not).")
    verify_small_regions: bool = _f(True, "Verify regions with <= b_v samples too (paper). "
                                          "False: such regions are not verified and get an "
                                          "even share floor((m-|D'|)/|B|) under either budget "
                                          "rule (authors' code).")
    fill: Literal["weighted", "uniform"] = _f(
        "weighted", "How the leftover (when the budgets end short of m) is drawn among the "
                    "unselected eligible samples: 'weighted' by their region's V_i, or "
                    "'uniform' (authors' code).")
    boundary: Literal["upper", "lower"] = _f(
        "upper", "Region of a score exactly on an inner edge: the one above it ('upper', "
                 "regions [e_i, e_i+1)) or below it ('lower', (e_i, e_i+1], authors' code).")
    # Variants beyond the paper (docs/method.md, "Variants"); the defaults are Algorithm 1.
    region_edges: Literal["equal-width", "quantile-clipped", "log", "equal-count"] = _f(
        "equal-width", "How the K regions split the scores: 'equal-width' over [min, max] "
                       "(paper); 'quantile-clipped': equal width over the [region_clip, "
                       "1 - region_clip] quantiles, the tails joining the end regions (a few "
                       "huge scores no longer squeeze everything into one region); 'log': "
                       "equal width over log(score); 'equal-count': K regions of N/K samples.")
    region_clip: float = _f(0.01, "Quantile clipped at each end by region_edges: "
                                  "quantile-clipped.")
    verify_scale: Literal["score", "rank"] = _f(
        "score", "V_i from the normalised scores (paper, Eq. 3) or from their ranks among the "
                 "verified samples, so a fine-tuned small model and an untuned target compare "
                 "by order, not by scale.")
    length_adjust: Literal["none", "sum", "residual"] = _f(
        "none", "Effort is the gradient of a MEAN token loss, so long responses get small "
                "scores. 'sum': the gradient of the summed loss (effort x response tokens); "
                "'residual': effort / n^b, b fitted by least squares of log effort on log n "
                "(the length trend removed). Applied to the small and target scores alike.")
    length_strata: int = _f(
        0, "0: off (paper). L >= 2: split the samples into L equal-count strata by response "
           "tokens and spend each stratum's share of m (its share of N) with STAFF's regions, "
           "V_i and Eq. 4 inside it: the coreset keeps the data's response lengths, and what "
           "STAFF adds is its choice within a length. Effort's spread is wider for short "
           "responses, so the paper's draw, which favours the thin tails, over-draws them "
           "even after length_adjust: residual (BENCHMARKS.md).")

    def __post_init__(self) -> None:
        if isinstance(self.pruning_rates, (int, float, str)):
            self.pruning_rates = [self.pruning_rates]
        rates = []
        for p in self.pruning_rates:
            try:
                rates.append(float(p))
            except (TypeError, ValueError):
                raise ConfigError(f"selection.pruning_rates contains {p!r}, must be numbers in "
                                  "(0, 1).") from None
        for p in rates:
            if not 0.0 < p < 1.0:
                raise ConfigError(f"selection.pruning_rates contains {p}, must be in (0, 1).")
        if not rates:
            raise ConfigError("selection.pruning_rates is empty, give at least one rate.")
        self.pruning_rates = rates
        if self.regions is not None and self.regions < 1:
            raise ConfigError(f"selection.regions == {self.regions}, must be >= 1.")
        if self.verify_per_region is not None and self.verify_per_region < 1:
            raise ConfigError(f"selection.verify_per_region == {self.verify_per_region}, "
                              "must be >= 1.")
        if not 0.0 <= self.hard_prune < 1.0:
            raise ConfigError(f"selection.hard_prune == {self.hard_prune}, must be in [0, 1).")
        if not 0.0 <= self.ccs_hard_cutoff < 1.0:
            raise ConfigError(f"selection.ccs_hard_cutoff == {self.ccs_hard_cutoff}, must be "
                              "in [0, 1).")
        for name in ("ccs_strata", "d2_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"selection.{name} == {getattr(self, name)}, must be >= 1.")
        if self.d2_gamma < 0:
            raise ConfigError(f"selection.d2_gamma == {self.d2_gamma}, must be >= 0.")
        if not 0.0 < self.region_clip < 0.5:
            raise ConfigError(f"selection.region_clip == {self.region_clip}, must be in "
                              "(0, 0.5).")
        if self.length_strata < 0 or self.length_strata == 1:
            raise ConfigError(f"selection.length_strata == {self.length_strata}, must be 0 "
                              "(off) or >= 2.")


@dataclass
class ReportConfig:
    enabled: bool = _f(True, "Write report.html (figures embedded) at the end of every run.")
    composition_field: str | None = _f(None, "Row field to compare coreset vs full data by "
                                             "(e.g. task, topic); default: 'task' or 'topic' "
                                             "when the rows have it.")


@dataclass
class DraftConfig:
    """`staff draft`: a smaller model derived from the target (its family has none smaller)."""

    output_dir: str = _f("runs/draft", "Folder of the draft: an ordinary model folder that "
                                       "`staff select --small FOLDER` accepts.")
    keep_layers: int | None = _f(None, "Decoder layers to keep; None: keep_fraction of them.")
    keep_fraction: float = _f(0.4, "Fraction of the target's decoder layers to keep (rounded, "
                                   "at least 1) when keep_layers is None.")
    calibration_samples: int = _f(128, "Task samples whose prompts rank the layers by how "
                                       "little each changes its input.")
    heal_steps: int = _f(300, "Distillation steps (KL to the target's logits on the task's "
                              "samples) that heal the draft after its layers are removed.")
    batch_size: int = _f(8, "Samples per distillation step.")
    learning_rate: float = _f(1e-4, "Peak learning rate of the draft's weights (AdamW, cosine).")
    warmup_ratio: float = _f(0.05, "Fraction of heal steps with linear warm-up.")
    temperature: float = _f(1.0, "Softmax temperature of the distillation loss.")
    held_out: int = _f(64, "Task samples kept out of healing; the response loss of target, "
                           "pruned and healed draft on them goes into draft.json.")
    checkpoint_every: int = _f(50, "Heal steps between resumable checkpoints; does not change "
                                   "the result.")
    task_vocabulary: bool = _f(False, "Keep only the tokens the task's data uses (and the byte "
                                      "alphabet, special tokens, BPE intermediates) in the "
                                      "draft's embedding and LM head, so the head shrinks "
                                      "with the task; the tokenizer is cut to match and "
                                      "checked to split every sample as before.")

    def __post_init__(self) -> None:
        if self.keep_layers is not None and self.keep_layers < 1:
            raise ConfigError(f"draft.keep_layers == {self.keep_layers}, must be >= 1.")
        if not 0.0 < self.keep_fraction < 1.0:
            raise ConfigError(f"draft.keep_fraction == {self.keep_fraction}, must be in (0, 1).")
        for name in ("calibration_samples", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"draft.{name} == {getattr(self, name)}, must be >= 1.")
        if self.heal_steps < 0 or self.held_out < 0:
            raise ConfigError("draft.heal_steps and draft.held_out must be >= 0.")
        if self.temperature <= 0:
            raise ConfigError(f"draft.temperature == {self.temperature}, must be > 0.")


SEED_MAX = 2**63 - 1


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    small: ModelConfig = field(default_factory=ModelConfig)
    target: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    draft: DraftConfig = field(default_factory=DraftConfig)
    seed: int = _f(0, "Seed of every random choice (fine-tuning order, LoRA init, draws).")
    stage1_seed: int | None = _f(None, "Seed of stage 1 only (train-small / train-target and "
                                       "the scoring on them); null: seed. A benchmark sets it "
                                       "to hold stage 1 fixed while seeds vary the draws.")
    output_dir: str = _f("runs/staff", "Run folder; re-running the same config resumes it.")
    device: str = _f("auto", "'auto' (cuda, then mps, then cpu), or a torch device string.")
    preset: Literal["none", "authors"] = _f(
        "none", "'authors': every option where the authors' released code departs from the "
                "paper, at once (see PRESETS; options set explicitly still win).")

    def __post_init__(self) -> None:
        if not self.data.path:
            raise ConfigError("data.path is empty: give a file, a dataset folder, a hub "
                              "dataset name, or 'demo'.")
        if self.stage1_seed is not None and (isinstance(self.stage1_seed, bool)
                                             or not isinstance(self.stage1_seed, int)
                                             or self.stage1_seed < 0):
            raise ConfigError(f"stage1_seed == {self.stage1_seed!r}, must be an integer >= 0 "
                              "(or null).")
        for role in ("small", "target"):
            if not getattr(self, role).name:
                raise ConfigError(f"{role}.name is empty: give a hub id, a folder or a .gguf.")
        if not 0 <= self.seed <= SEED_MAX:  # what numpy's and torch's generators both take
            raise ConfigError(f"seed == {self.seed}, must be in [0, 2**63 - 1].")
        if not self.device.strip():
            raise ConfigError("device is empty: give 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Option values a preset sets, unless the config sets them itself. 'authors': the released code
# (github.com/shiningrain/STAFF, see docs/method.md): min-max normalisation, V_i over the
# unvisited regions' sum, the top scores in a region, the top 10% dropped first, small regions
# unverified with an even share, a uniform fill, edge scores in the lower region, and the
# gradient of the last decoder layer only.
PRESETS: dict[str, dict] = {
    "none": {},
    "authors": {"selection.normalize": "minmax", "selection.budget_rule": "share",
                "selection.within_region": "top", "selection.hard_prune": 0.1,
                "selection.verify_small_regions": False, "selection.fill": "uniform",
                "selection.boundary": "lower", "scoring.scope": "last-layer"},
}


def _apply_preset(tree: dict) -> dict:
    """A copy of ``tree`` with its preset's values filled in where the tree sets none."""
    name = tree.get("preset", "none")
    if isinstance(name, _Override):
        name = name.parsed
    if name not in PRESETS:
        choices = ", ".join(repr(c) for c in PRESETS)
        raise ConfigError(f"preset == {name!r}, must be one of {choices}.")
    tree = copy.deepcopy(tree)
    for key, value in PRESETS[name].items():
        section, option = key.split(".")
        if tree.get(section) is None:
            tree[section] = {}
        if isinstance(tree[section], dict):  # anything else: build names the bad section
            tree[section].setdefault(option, value)
    return tree


# The embedded default: runs offline on a 2-core CPU in a few minutes (see README).
DEMO_CONFIG: dict = {
    "data": {"path": "demo", "demo_size": 240, "cutoff_len": 128},
    "small": {"name": "offline:smollm2-135m-instruct"},
    "target": {"name": "offline:gemma-3-270m"},
    "lora": {"r": 8, "alpha": 16},
    "finetune": {"epochs": 2, "learning_rate": 3e-4, "batch_size": 8},
    "scoring": {"batch_size": 8},
    "selection": {"pruning_rates": [0.5, 0.7, 0.9], "regions": 10, "verify_per_region": 4},
    "output_dir": "runs/demo",
}


# ----------------------------------------------------------------------------- loading

def build(cls: type, values: dict, prefix: str = "") -> Any:
    """A config dataclass ``cls`` from a tree, checked: unknown options and wrong types are
    ConfigErrors naming the option (``prefix`` + name)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got "
                          f"{type(values).__name__}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown option {prefix}{unknown[0]} (known: {', '.join(sorted(names))}).")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


class _Override(str):
    """A --set value: the raw text, with its YAML reading in ``parsed``. A string option takes
    the raw text ("English: {en}" is a string, not a mapping); others take the YAML value."""

    parsed: Any = None


def _check_type(value: Any, hint: Any, name: str) -> Any:
    if isinstance(value, _Override):
        wants_text = hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                                     and str in typing.get_args(hint))
        if wants_text and not (value.parsed is None and value.strip() in ("null", "~", "")):
            return str(value)
        value = value.parsed
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{name} == {value!r}, must be one of {choices}.")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_type(value, args[0], name)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} == {value!r}, must be true or false.")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} == {value!r}, must be a number.")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{name} == {value!r}, must be an integer.")
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name} == {value!r}, must be a string.")
        return str(value)
    return value


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section.")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'selection.regions=20' -> ('selection.regions', 20); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.option=value.")
    key, raw = text.split("=", 1)
    value = _Override(raw)
    try:
        value.parsed = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value.parsed = raw
    return key.strip(), value


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``; errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        line = err.object.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte "
                          f"0x{err.object[err.start]:02x}); save the file as UTF-8.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)}).")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections.")
    return tree


def apply_overrides(tree: dict, overrides: dict | list | None) -> dict:
    """``{"a.b": 1}`` or ``["a.b=1"]`` set into a config tree (in place; returned)."""
    items = overrides.items() if isinstance(overrides, dict) else (
        parse_override(o) for o in (overrides or []))
    for key, value in items:
        _set_dotted(tree, key, value)
    return tree


def merge_defaults(defaults: dict, tree: dict) -> dict:
    """``tree`` over ``defaults``, section by section (a new dict; neither is changed)."""
    out = copy.deepcopy(defaults)
    for key, value in tree.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_defaults(out[key], value)
        else:
            out[key] = value
    return out


def load_tree(path: str | Path | None, overrides: dict | list | None = None, *,
              data_sections: tuple[str, ...] = ("data",), defaults: dict | None = None,
              without_file: dict | None = None) -> dict:
    """The one way every config file of the project (run, bench, fine-tune/evaluate) is read:
    the YAML at ``path`` (``without_file`` when None), the ``path`` of each of
    ``data_sections`` read from the file's folder, ``defaults`` merged under it, then the
    overrides: a dict ``{"selection.regions": 20}`` or a list of ``"key=value"`` strings."""
    tree = copy.deepcopy(without_file or {}) if path is None else read_yaml(path)
    if path is not None:
        resolve_data_paths(tree, Path(path).parent, *data_sections)
    if defaults:
        tree = merge_defaults(defaults, tree)
    return apply_overrides(tree, overrides)  # never edits the embedded default: it is a copy


def load_config(path: str | Path | None = None, overrides: dict | list | None = None) -> RunConfig:
    """Config from a YAML file (or the embedded demo default when ``path`` is None), then
    overrides: a dict ``{"selection.regions": 20}`` or a list of ``"key=value"`` strings.

    A relative ``data.path`` in the file is read from the file's folder (a config works from
    any working directory); one given as an override is read from the working directory."""
    return build(RunConfig, _apply_preset(load_tree(path, overrides, without_file=DEMO_CONFIG)))


def _resolve_data_path(tree: dict, base: Path) -> None:
    """data.path relative to the YAML's folder, made absolute (the run folder's config.yaml
    then names the data wherever `staff report` runs). A hub id ("owner/name") that is not a
    file there stays as it is."""
    from .data.sources import looks_like_hub_id

    data = tree.get("data")
    value = data.get("path") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value or value == "demo":
        return
    path = Path(value).expanduser()
    if path.is_absolute():
        return
    candidate = (base / path).resolve()
    if candidate.exists() or not looks_like_hub_id(value):
        data["path"] = str(candidate)


def resolve_data_paths(tree: dict, base: Path, *sections: str) -> None:
    """The ``path`` of each named section (dotted, e.g. ``select.data``, ``eval``) read from
    the YAML's folder, as ``load_config`` reads data.path: every config file of the project
    (run, bench, fine-tune/evaluate) names its data the same way."""
    for section in sections:
        node = tree
        for key in section.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            _resolve_data_path({"data": node}, base)


def default_tree() -> dict:
    """Every option's library default, without the checks that need a value (data.path and
    the model names have none): what a user's config starts from."""
    def walk(cls) -> dict:
        out = {}
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING:
                made = f.default_factory()
                out[f.name] = walk(type(made)) if dataclasses.is_dataclass(made) else made
            else:
                out[f.name] = f.default
        return out

    return walk(RunConfig)


def dump_defaults() -> str:
    """The library defaults as YAML, each option with its help as a comment."""
    def flow(value) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix(
            "\n...").strip()

    lines = ["# staff show-config: every option with its library default (the values a config",
             "# file starts from; `staff show-config --demo` prints the embedded demo's).",
             "# data.path, small.name and target.name have no default: set them."]
    tree = default_tree()

    def emit_section(cls, values, indent):
        for f in dataclasses.fields(cls):
            value, help_text = values[f.name], f.metadata.get("help", "")
            if isinstance(value, dict):
                lines.append(f"{indent}{f.name}:")
                emit_section(type(f.default_factory()), value, indent + "  ")
            else:
                lines.append(f"{indent}{f.name}: {flow(value)}"
                             + (f"  # {help_text}" if help_text else ""))

    emit_section(RunConfig, tree, "")
    return "\n".join(lines) + "\n"


def config_from_dict(tree: dict) -> RunConfig:
    return build(RunConfig, _apply_preset(tree))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
