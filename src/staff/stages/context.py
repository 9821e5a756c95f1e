"""What every stage of one run shares, loaded once and only when a stage needs it: the
config, the run folder, the device (one per process under ``accelerate launch``), the data,
the tokenizers and the tokenized samples."""

from __future__ import annotations

import logging
from dataclasses import replace

from ..config import ConfigError, RunConfig
from ..runs.folder import RunFolder

log = logging.getLogger(__name__)


class RunContext:
    """The shared, lazily loaded inputs of one config's stages."""

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
        # role -> fine-tuned model, reused by the scoring stage in one process
        self.tuned: dict[str, object] = {}
        self._tokenized: dict[str, list] = {}

    @property
    def device(self):
        if self._device is None:
            from ..models.loading import pick_device

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

            from ..models.loading import pick_device

            self._accelerator = Accelerator(cpu=pick_device(self.cfg.device).type == "cpu")
        return self._accelerator

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def progress(self) -> bool:
        """Progress bars: only the main process shows them."""
        return self.show_progress and self.is_main

    @property
    def examples(self):
        if self._examples is None:
            from ..data import load_rows, to_examples

            rows = load_rows(self.cfg.data) if self._rows is None else self._rows
            if self._rows is not None and self.cfg.data.max_samples is not None:
                rows = rows[:self.cfg.data.max_samples]
            self._examples = to_examples(rows, self.cfg.data, source=self.cfg.data.path)
            log.info("%d samples from %s", len(self._examples), self.cfg.data.path)
        return self._examples

    @property
    def examples_loaded(self) -> bool:
        return self._examples is not None

    def tokenizer(self, role: str):
        if role not in self._tokenizers:
            from ..models.loading import load_tokenizer

            self._tokenizers[role] = load_tokenizer(getattr(self.cfg, role))
        return self._tokenizers[role]

    def tokenized(self, role: str, subset: list[int] | None = None) -> list:
        """The samples tokenized for the ``role`` model, held compactly (int32 arrays: a
        Python list of ints costs ~8x more, which matters at millions of samples)."""
        from ..data.formatting import tokenize_compact

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
            from ..data.sources import data_fingerprint

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

    def resolve_sizes(self) -> None:
        """Unset K and b_v, scaled to N (logged; the run's config.yaml records the values)."""
        from ..selection.base import resolve_sizes

        s = self.cfg.selection
        if s.regions is None or s.verify_per_region is None:
            # A copy: the caller's config (Python API) keeps its unset values.
            self.cfg = replace(self.cfg, selection=resolve_sizes(self.n_samples, s))

    @property
    def stage1_seed(self) -> int:
        """The seed of stage 1 (fine-tuning and scoring on the full data)."""
        return self.cfg.seed if self.cfg.stage1_seed is None else self.cfg.stage1_seed

    def check_models(self, stages) -> None:
        """Fail before any work if a model that the stages to run need cannot be found or
        used as configured, or its tokenizer cannot load or lacks the chat template the data
        asks for (a bad target would otherwise show only after fine-tuning and scoring the
        small model)."""
        from ..data.formatting import check_chat_template
        from ..models.adapters import check_lora_targets
        from ..models.loading import check_hub_model

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
