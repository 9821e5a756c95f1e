"""Fine-tune a model on the full data or a coreset, and evaluate it: the paper's §4.1 protocol.

A ``TrainEval`` holds what many runs of one config share (tokenizer, tokenized training data,
the held-out split, the base model loaded once and copied per run), so the benchmark grid loads
SmolLM2 once instead of once per cell.

Output folder of one run (every file atomic; a finished step is skipped when run again with the
same inputs, checked by a fingerprint):

  config.yaml        the resolved config (its seed is the run's)
  ids.txt            the training ids, in data order
  adapter/           the LoRA adapter (PEFT format)
  history.json       loss per optimiser step
  train.json         fingerprint, samples, seconds, final loss
  finetune_work/     resumable checkpoint while fine-tuning (removed when done)

and for each evaluation a folder (``eval/`` for the adapter, ``eval-untuned/`` for the model
without it) with metrics.json and predictions.jsonl.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..runs.folder import fingerprint, use_scratch, write_atomic, write_dir_atomic, write_json
from ..runs.layout import CONFIG, IDS
from ..config import FINETUNE_NO_EFFECT
from .config import TrainEvalConfig

log = logging.getLogger(__name__)

# Options that cannot change a result (how often to checkpoint, how many prompts per batch):
# changing them must not redo finished work.
_NO_EFFECT = set(FINETUNE_NO_EFFECT)
_TOKENIZATION = ("format", "prompt_template", "response_template", "chat_template", "cutoff_len")


@dataclass
class FinetuneResult:
    out_dir: Path
    adapter_dir: Path
    info: dict            # train.json: fingerprint, samples, seconds, final_loss, seed
    model: object = None  # the tuned model when it was trained in this call (None when cached)

    @property
    def skipped(self) -> bool:
        return self.model is None


class TrainEval:
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
        data = {k: getattr(c.data, k) for k in _TOKENIZATION}
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
        from ..models.loading import attach_lora

        c, out = self.cfg, Path(out_dir)
        seed = c.seed if seed is None else seed
        pairs = self.subset(ids)
        fp = self.finetune_fingerprint(pairs, seed, steps)
        adapter = out / "adapter"
        info = _read_json(out / "train.json")
        if info.get("fingerprint") == fp and (adapter / "adapter_config.json").is_file():
            log.info("fine-tuning %s: done before, skipped", out)
            return FinetuneResult(out, adapter, info)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / CONFIG, _yaml(dataclasses.replace(c, seed=seed,
                                                                    output_dir=str(out))))
        write_atomic(out / IDS, "".join(f"{e.id}\n" for e, _ in pairs))
        work = out / "finetune_work"
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
        write_json(out / "history.json", history)
        info = {"fingerprint": fp, "samples": len(pairs), "seed": seed,
                "seconds": round(seconds, 3), "steps": history["steps"],
                "final_loss": history["loss"][-1] if history["loss"] else None}
        write_json(out / "train.json", info)
        shutil.rmtree(work, ignore_errors=True)
        log.info("fine-tuned in %.1f s -> %s", seconds, adapter)
        return FinetuneResult(out, adapter, info, model)

    # ---------------------------------------------------------------- evaluation
    @property
    def eval_tokens(self) -> list:
        """The held-out split tokenized as training samples, with the first reference as the
        response, written the way the training template writes a response (a template
        " {summary}" trains on a leading space; scoring "{summary1}" bare would charge the
        model for a token it was taught to emit)."""
        if getattr(self, "_eval_tokens", None) is None:
            from ..data import tokenize_examples

            examples, refs = self.eval_set
            wrap = _response_wrapper(self.cfg.data)
            scored = [dataclasses.replace(e, response=wrap(r[0])) for e, r in zip(examples, refs)]
            self._eval_tokens = tokenize_examples(scored, self.tokenizer, self.cfg.data)
        return self._eval_tokens

    def _model_to_evaluate(self, adapter_dir, model):
        """The model given, else the base model with the adapter (or without: untuned)."""
        if model is not None:
            return model
        if adapter_dir:
            from ..models.loading import load_adapter

            return load_adapter(self.base_model(), adapter_dir, trainable=False)
        return self.base_model(copy_=False)

    def held_out_loss(self, out_dir: str | Path, adapter_dir: str | Path | None = None,
                      model=None) -> dict:
        """Mean token NLL of the held-out reference responses, teacher-forced: the
        low-variance metric of the benchmark (one forward pass per batch, no decoding).

        Each example's loss is the mean cross-entropy over its own response tokens (the
        training loss's definition, so that long references do not dominate); ``loss`` is the
        mean over examples, and ``per_example`` keeps each one for paired statistics. With
        several references, the first one is scored. Written to ``out_dir/loss.json``,
        skipped when done before with the same inputs."""
        import torch

        from ..training.batching import collate, length_sorted_batches
        from ..training.losses import per_sample_losses

        c, out = self.cfg, Path(out_dir)
        examples, _ = self.eval_set
        adapter_fp = _adapter_fingerprint(Path(adapter_dir)) if adapter_dir else "untuned"
        fp = fingerprint("held-out loss", adapter_fp, dataclasses.asdict(c.model),
                         {k: getattr(c.data, k) for k in _TOKENIZATION},
                         [(e.id, e.prompt, e.response) for e in examples])
        cached = _read_json(out / "loss.json")
        if cached.get("fingerprint") == fp:
            return cached
        model = self._model_to_evaluate(adapter_dir, model)
        tokens = self.eval_tokens
        started = time.perf_counter()
        losses = np.zeros(len(tokens))
        was_training = model.training
        model.eval()  # no dropout: the loss of the model as it will be used
        with torch.no_grad():
            for index in length_sorted_batches(np.array([len(t.input_ids) for t in tokens]),
                                               c.eval.batch_size):
                batch = collate([tokens[i] for i in index], self.tokenizer.pad_token_id,
                                self.device)
                losses[index] = per_sample_losses(model, batch).double().cpu().numpy()
        model.train(was_training)
        if not np.all(np.isfinite(losses)):
            bad = [examples[i].id for i in np.flatnonzero(~np.isfinite(losses))[:5]]
            raise ConfigError(f"held-out loss is NaN or inf for {len(bad)} example(s), e.g. "
                              f"{bad[0]!r}: the adapter {adapter_dir} is broken.")
        result = {"loss": float(losses.mean()), "n": len(losses),
                  "per_example": [round(float(v), 6) for v in losses],
                  "ids": [e.id for e in examples],
                  "seconds": round(time.perf_counter() - started, 3), "fingerprint": fp}
        write_json(out / "loss.json", result)
        log.info("held-out loss %.4f on %d examples -> %s", result["loss"], len(losses), out)
        return result

    def evaluate(self, out_dir: str | Path, adapter_dir: str | Path | None = None,
                 model=None) -> dict:
        """Greedy predictions on the held-out split and their ROUGE-L / BLEU-4, written to
        ``out_dir/predictions.jsonl`` and ``out_dir/metrics.json``. ``adapter_dir`` None: the
        base model. ``model``: the already loaded (tuned) model, when the caller has it."""
        from ..data import encode_prompt, write_jsonl_atomic
        from .generate import fit_prompt, greedy_generate
        from .metrics import score_predictions

        c, out = self.cfg, Path(out_dir)
        examples, refs = self.eval_set
        if c.eval.decode_samples is not None:
            examples, refs = examples[:c.eval.decode_samples], refs[:c.eval.decode_samples]
        adapter_fp = _adapter_fingerprint(Path(adapter_dir)) if adapter_dir else "untuned"
        options = eval_options(c.eval)
        fp = fingerprint(adapter_fp, dataclasses.asdict(c.model), options,
                         {k: getattr(c.data, k) for k in _TOKENIZATION},
                         [(e.id, e.prompt) for e in examples], refs)
        cached = _read_json(out / "metrics.json")
        if cached.get("fingerprint") == fp and (out / "predictions.jsonl").is_file():
            log.info("evaluation %s: done before, skipped", out)
            return cached
        model = self._model_to_evaluate(adapter_dir, model)
        tok = self.tokenizer
        limit = c.data.cutoff_len - c.eval.max_new_tokens
        full = [encode_prompt(e, tok, c.data) for e in examples]
        prompts = [fit_prompt(p, limit, tok.bos_token_id) for p in full]
        cut = sum(len(a) != len(b) for a, b in zip(full, prompts))
        if cut:
            log.info("%d of %d prompts cut to %d tokens (data.cutoff_len - eval.max_new_tokens)",
                     cut, len(prompts), limit)
        started = time.perf_counter()
        preds = greedy_generate(model, tok, prompts, max_new_tokens=c.eval.max_new_tokens,
                                batch_size=c.eval.batch_size, device=self.device,
                                stop=c.eval.stop, threads=c.eval.threads,
                                show_progress=self.show_progress,
                                desc="generating" + (" (tuned)" if adapter_dir else " (untuned)"))
        seconds = time.perf_counter() - started
        scores = score_predictions(preds, refs)
        write_jsonl_atomic([{"id": e.id, "prediction": p, "references": r, "rouge_l": s}
                            for e, p, r, s in zip(examples, preds, refs,
                                                  scores["per_sample_rouge_l"])],
                           out / "predictions.jsonl")
        metrics = {"rouge_l": scores["rouge_l"], "bleu": scores["bleu"], "n": scores["n"],
                   "references_per_sample": max(len(r) for r in refs),
                   "bleu_signature": scores["bleu_signature"], "model": c.model.name,
                   "adapter": str(adapter_dir) if adapter_dir else None,
                   "generation": {"greedy": True, "max_new_tokens": c.eval.max_new_tokens,
                                  "stop": c.eval.stop, "prompt_limit": limit,
                                  "prompts_cut": cut},
                   "seconds": round(seconds, 3), "fingerprint": fp}
        write_json(out / "metrics.json", metrics)
        log.info("ROUGE-L %.2f, BLEU-4 %.2f on %d samples (%.1f s) -> %s", metrics["rouge_l"],
                 metrics["bleu"], metrics["n"], seconds, out)
        return metrics


def _response_wrapper(data):
    """reference text -> the response as the training data writes it: a template with one
    field keeps its text around the field (" {de}" -> " " + text); any other format or
    template takes the reference as it is."""
    import string

    if data.format == "template" and data.response_template:
        parts = list(string.Formatter().parse(data.response_template))
        fields = [p for p in parts if p[1] is not None]
        if len(fields) == 1 and not fields[0][2] and not fields[0][3]:
            before = "".join(p[0] for p in parts[:parts.index(fields[0]) + 1])
            after = "".join(p[0] for p in parts[parts.index(fields[0]) + 1:])
            return lambda text: before + text + after
    return lambda text: text


def eval_options(cfg) -> dict:
    """The eval options that can change a prediction (not batch size or threads; the decode
    subset through the examples themselves, and left out when unset so that evaluations
    made before the option existed still count)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("batch_size", "threads", "decode_samples")}


def _adapter_fingerprint(adapter_dir: Path) -> str:
    """The adapter's identity: a hash of its config and weights."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {adapter_dir} has no adapter_config.json: give a folder "
                          "written by `staff finetune`.")
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = adapter_dir / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


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
