"""Config of fine-tuning a model on (a subset of) the data and evaluating it on a held-out split.

The sections are the run config's own (``staff.config``): ``data`` is the training data, and
``eval`` reads its held-out split with the same format and templates. Defaults follow the paper's
evaluation recipe (§4.1: LoRA, 4 epochs, cosine schedule, warm-up 0.1, batch 8, lr 2e-4).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (ConfigError, DataConfig, FinetuneConfig, LoraConfig, ModelConfig,
                      build, load_tree)
from ..config import option as _f

# The paper's recipe for fine-tuning the target on a coreset; merged under every loaded file so
# that a file setting only finetune.learning_rate keeps 4 epochs (FinetuneConfig's own default is
# the selection's T = 3).
PAPER_FINETUNE = {"epochs": 4, "learning_rate": 2e-4, "batch_size": 8, "warmup_ratio": 0.1}


@dataclass
class EvalConfig:
    path: str = _f("", "Held-out split (a file, a dataset folder or a hub dataset), read with "
                       "data's format and templates. Must not overlap the training data.")
    split: str = _f("test", "Split to read from a hub dataset or a DatasetDict folder.")
    max_samples: int | None = _f(None, "Evaluate on the first N rows only.")
    decode_samples: int | None = _f(None, "Decode (ROUGE-L, BLEU-4) only the first N of those "
                                          "rows; the held-out loss uses all of them. null: "
                                          "decode all.")
    references: list = _f([], "Reference templates over a row's fields, one per reference, e.g. "
                              "['{summary1}', '{summary2}', '{summary3}'] (DialogSum test). "
                              "Empty: the row's response as data's format makes it.")
    max_new_tokens: int = _f(64, "Greedy decoding stops after this many new tokens (or at EOS).")
    batch_size: int = _f(8, "Prompts per generation batch (left-padded, sorted by length).")
    stop: list = _f([], "Cut each decoded prediction at the first of these strings, e.g. "
                        "['\\n'] for one-line answers (an untuned model rarely emits EOS).")
    threads: int | None = _f(None, "CPU threads while decoding (None: torch's default). Greedy "
                                   "decoding of a small model is a chain of tiny ops: on a "
                                   "2-core CPU shared with other jobs, 1 thread is much faster "
                                   "than 2 (the threads spin at every barrier).")

    def __post_init__(self) -> None:
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"eval.max_samples == {self.max_samples}, must be >= 1.")
        if self.decode_samples is not None and self.decode_samples < 1:
            raise ConfigError(f"eval.decode_samples == {self.decode_samples}, must be >= 1.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"eval.max_new_tokens == {self.max_new_tokens}, must be >= 1.")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size == {self.batch_size}, must be >= 1.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"eval.threads == {self.threads}, must be >= 1 (or null).")
        for name in ("references", "stop"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"eval.{name} == {value!r}, must be a list of non-empty "
                                  "strings.")
            setattr(self, name, value)


@dataclass
class TrainEvalConfig:
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(**PAPER_FINETUNE))
    seed: int = _f(0, "Seed of LoRA initialisation and the batch order.")
    output_dir: str = _f("runs/finetune", "Folder of adapter/, history.json and eval results.")
    device: str = _f("auto", "'auto' (cuda, then mps, then cpu), or a torch device string.")

    def __post_init__(self) -> None:
        if not self.data.path:
            raise ConfigError("data.path is empty: give the training data.")
        if not self.model.name:
            raise ConfigError("model.name is empty: give a hub id, a folder or a .gguf.")
        train, held_out = Path(self.data.path).expanduser(), Path(self.eval.path).expanduser()
        if self.eval.path and held_out.resolve() == train.resolve() and (
                train.is_file() or self.eval.split == self.data.split):  # a file has one split
            raise ConfigError(f"eval.path == data.path == {self.data.path!r}: evaluate on a "
                              "held-out split, not on the training data.")
        if self.eval.max_new_tokens >= self.data.cutoff_len:
            raise ConfigError(f"eval.max_new_tokens == {self.eval.max_new_tokens}, must be < "
                              f"data.cutoff_len == {self.data.cutoff_len} (prompts are cut to "
                              "data.cutoff_len - eval.max_new_tokens tokens).")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def eval_data(self) -> DataConfig:
        """data's options pointed at the held-out split. A template's response becomes the first
        reference template, because held-out rows may name it differently (DialogSum test has
        summary1..3 and no summary)."""
        e = self.eval
        if not e.path:
            raise ConfigError("eval.path is empty: give the held-out split to evaluate on.")
        over: dict[str, Any] = {"path": e.path, "split": e.split, "max_samples": e.max_samples}
        if self.data.format == "template" and e.references:
            over["response_template"] = e.references[0]
        return dataclasses.replace(self.data, **over)


def load_train_eval_config(path: str | Path | None = None,
                           overrides: dict | list | None = None) -> TrainEvalConfig:
    """TrainEvalConfig from a YAML file and ``section.option=value`` overrides; unknown options
    are errors. Unset fine-tuning options take the paper's values (``PAPER_FINETUNE``)."""
    tree = load_tree(path, overrides, data_sections=("data", "eval"),
                     defaults={"finetune": PAPER_FINETUNE})
    return build(TrainEvalConfig, tree)
