"""Fine-tune a model on the full data or a coreset, and evaluate it: the paper's §4.1 protocol.

A ``TrainEval`` holds what many runs of one config share (tokenizer, tokenized training data,
the held-out split, the base model loaded once and copied per run), so the benchmark grid loads
SmolLM2 once instead of once per cell.

The output folder of one run, a training cell, is described in ``runs.layout`` (every file
atomic; a finished step is skipped when run again with the same inputs, checked by a
fingerprint). The evaluation methods are in ``held_out``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import FINETUNE_NO_EFFECT, ConfigError
from ..runs.folder import fingerprint, use_scratch, write_atomic, write_dir_atomic, write_json
from ..runs.layout import (ADAPTER_CONFIG, CELL_ADAPTER, CELL_HISTORY, CONFIG, FINETUNE_WORK, IDS,
                           TRAIN_INFO)
from .config import TrainEvalConfig
from .held_out import TOKENIZATION, HeldOutEvaluation, eval_options, read_json  # noqa: F401

log = logging.getLogger(__name__)

# Options that cannot change a result (how often to checkpoint, how many prompts per batch):
# changing them must not redo finished work.
_NO_EFFECT = set(FINETUNE_NO_EFFECT)


@dataclass
class FinetuneResult:
    out_dir: Path
    adapter_dir: Path
    info: dict            # train.json: fingerprint, samples, seconds, final_loss, seed
    model: object = None  # the tuned model when it was trained in this call (None when cached)

    @property
    def skipped(self) -> bool:
        return self.model is None


class TrainEval(HeldOutEvaluation):
    """Fine-tune / evaluate runs of one ``TrainEvalConfig``; ``seed`` may vary per run."""

    def __init__(self, cfg: TrainEvalConfig, show_progress: bool = True):
        self.cfg = cfg
        self.show_progress = show_progress
        self._device = self._tokenizer = self._base = None
        self._train = self._eval = None

    # ---------------------------------------------------------------- shared inputs
    @property
    def device(self):
        if self._device is None:
            from ..models.loading import pick_device

            self._device = pick_device(self.cfg.device)
        return self._device

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from ..models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.cfg.model)
        return self._tokenizer

    @property
    def train_examples(self) -> list:
        """(Example, TokenizedExample) pairs of the training data, in data order."""
        if self._train is None:
            from ..data import load_rows, to_examples, tokenize_examples

            examples = to_examples(load_rows(self.cfg.data), self.cfg.data,
                                   source=self.cfg.data.path)
            tokens = tokenize_examples(examples, self.tokenizer, self.cfg.data)
            self._train = list(zip(examples, tokens))
        return self._train

    @property
    def eval_set(self) -> tuple[list, list[list[str]]]:
        """(examples, references) of the held-out split."""
        if self._eval is None:
            from ..data import DataError, load_rows, to_examples

            data = self.cfg.eval_data()
            examples = to_examples(load_rows(data), data, source=data.path)
            refs = []
            for ex in examples:
                if not self.cfg.eval.references:
                    refs.append([ex.response.strip()])
                    continue
                try:
                    row_refs = [t.format_map(ex.row).strip() for t in self.cfg.eval.references]
                except KeyError as err:
                    raise DataError(f"{data.path} row id {ex.id}: eval.references uses field "
                                    f"'{err.args[0]}', which the row lacks") from None
                refs.append([r for r in row_refs if r] or [ex.response.strip()])
            self._eval = (examples, refs)
        return self._eval

    def base_model(self, copy_: bool = True):
        """The base model, loaded once; a fresh copy unless ``copy_`` is false (LoRA attaches in
        place, so every fine-tuning run needs its own copy; untuned generation does not)."""
        if self._base is None:
            from ..models.loading import load_model

            self._base = load_model(self.cfg.model, self.device)
        return copy.deepcopy(self._base) if copy_ else self._base

    # ---------------------------------------------------------------- fine-tuning
    def subset(self, ids: list[str] | None) -> list:
        """Training pairs with these ids (all when None), in data order; unknown ids are an
        error."""
        if ids is None:
            return self.train_examples
        wanted = set(map(str, ids))
        chosen = [pair for pair in self.train_examples if pair[0].id in wanted]
        if len(chosen) != len(wanted):
            known = {e.id for e, _ in self.train_examples}
            missing = sorted(wanted - known)
            raise ConfigError(f"{len(missing)} of {len(wanted)} ids are not in the training data "
                              f"{self.cfg.data.path}, e.g. {missing[0]!r}.")
        if not chosen:
            raise ConfigError("the list of training ids is empty.")
        return chosen

    def finetune_fingerprint(self, pairs: list, seed: int, steps: int | None = None) -> str:
        c = self.cfg
        data = {k: getattr(c.data, k) for k in TOKENIZATION}
        content = [(e.id, e.prompt, e.response) for e, _ in pairs]
        train = {k: v for k, v in dataclasses.asdict(c.finetune).items() if k not in _NO_EFFECT}
        parts = (data, content, dataclasses.asdict(c.model), dataclasses.asdict(c.lora), train,
                 seed)
        # A fixed step count is a part of the recipe only when given (older runs keep theirs).
        return fingerprint(*parts, {"steps": steps}) if steps else fingerprint(*parts)

    def planned_steps(self, n_samples: int | None = None) -> int:
        """Optimiser steps of the epochs recipe on ``n_samples`` (default: the full data)."""
        from ..training.lora import planned_steps

        n = len(self.train_examples) if n_samples is None else n_samples
        return planned_steps(n, self.cfg.finetune)

    def finetune(self, out_dir: str | Path, ids: list[str] | None = None,
                 seed: int | None = None, steps: int | None = None) -> FinetuneResult:
        """LoRA-fine-tune the base model on the samples ``ids`` (all when None) into
        ``out_dir/adapter``; skipped when done before with the same inputs. ``steps``: train
        exactly that many optimiser steps, cycling over the samples (None: the recipe's
        epochs)."""
        from ..training.lora import finetune_lora
        from ..models.adapters import attach_lora

        c, out = self.cfg, Path(out_dir)
        seed = c.seed if seed is None else seed
        pairs = self.subset(ids)
        fp = self.finetune_fingerprint(pairs, seed, steps)
        adapter = out / CELL_ADAPTER
        info = read_json(out / TRAIN_INFO)
        if info.get("fingerprint") == fp and (adapter / ADAPTER_CONFIG).is_file():
            log.info("fine-tuning %s: done before, skipped", out)
            return FinetuneResult(out, adapter, info)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / CONFIG, _yaml(dataclasses.replace(c, seed=seed,
                                                                    output_dir=str(out))))
        write_atomic(out / IDS, "".join(f"{e.id}\n" for e, _ in pairs))
        work = out / FINETUNE_WORK
        use_scratch(work, fp)  # a checkpoint of other inputs must not be resumed
        log.info("fine-tuning %s on %d samples (seed %d)", c.model.name, len(pairs), seed)
        started = time.perf_counter()
        model = attach_lora(self.base_model(), c.lora, seed)
        history = finetune_lora(model, [t for _, t in pairs], self.tokenizer.pad_token_id,
                                c.finetune, seed, work,
                                checkpoint_every=c.finetune.checkpoint_every,
                                show_progress=self.show_progress, total_steps=steps)
        # With what interrupted processes spent on the steps kept (see finetune_lora).
        seconds = time.perf_counter() - started + history["seconds_before_resume"]
        write_dir_atomic(adapter, lambda d: model.save_pretrained(d, save_embedding_layers=False))
        write_json(out / CELL_HISTORY, history)
        info = {"fingerprint": fp, "samples": len(pairs), "seed": seed,
                "seconds": round(seconds, 3), "steps": history["steps"],
                "final_loss": history["loss"][-1] if history["loss"] else None}
        write_json(out / TRAIN_INFO, info)
        shutil.rmtree(work, ignore_errors=True)
        log.info("fine-tuned in %.1f s -> %s", seconds, adapter)
        return FinetuneResult(out, adapter, info, model)



def _yaml(cfg: TrainEvalConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def read_ids(path: str | Path) -> list[str]:
    """Ids, one a line (blank lines skipped): a selection's ``ids.txt``."""
    path = Path(path)
    try:
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as err:
        raise ConfigError(f"cannot read ids file {path}: {err.strerror or err}") from None
    ids = [i for i in ids if i]
    if not ids:
        raise ConfigError(f"ids file {path} lists no ids.")
    return ids
