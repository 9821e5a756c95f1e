"""Evaluating a training cell on the held-out split: the teacher-forced loss of the reference
responses (``loss.json``) and greedy predictions scored by ROUGE-L / BLEU-4 (``metrics.json``,
``predictions.jsonl``); each skipped when done before with the same inputs (a fingerprint).

``HeldOutEvaluation`` is a part of ``run.TrainEval``, which provides the shared inputs it reads
(``cfg``, ``tokenizer``, ``device``, ``eval_set``, ``base_model``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..runs.folder import fingerprint, write_json
from ..runs.layout import ADAPTER_CONFIG, HELD_OUT_LOSS, METRICS, PREDICTIONS

log = logging.getLogger("staff.evaluation.run")  # the name these messages always had

# The data options that change how a sample is tokenized.
TOKENIZATION = ("format", "prompt_template", "response_template", "chat_template", "cutoff_len")


class HeldOutEvaluation:
    """The evaluation methods of ``TrainEval``."""

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
            from ..models.adapters import load_adapter

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
        adapter_fp = adapter_fingerprint(Path(adapter_dir)) if adapter_dir else "untuned"
        fp = fingerprint("held-out loss", adapter_fp, dataclasses.asdict(c.model),
                         {k: getattr(c.data, k) for k in TOKENIZATION},
                         [(e.id, e.prompt, e.response) for e in examples])
        cached = read_json(out / HELD_OUT_LOSS)
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
        write_json(out / HELD_OUT_LOSS, result)
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
        adapter_fp = adapter_fingerprint(Path(adapter_dir)) if adapter_dir else "untuned"
        options = eval_options(c.eval)
        fp = fingerprint(adapter_fp, dataclasses.asdict(c.model), options,
                         {k: getattr(c.data, k) for k in TOKENIZATION},
                         [(e.id, e.prompt) for e in examples], refs)
        cached = read_json(out / METRICS)
        if cached.get("fingerprint") == fp and (out / PREDICTIONS).is_file():
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
        write_jsonl_atomic([{"id": e.id, "prediction": p, "references": r, "rouge_l": s,
                             "words": w[0]}
                            for e, p, r, s, w in zip(examples, preds, refs,
                                                     scores["per_sample_rouge_l"],
                                                     scores["per_sample_words"])],
                           out / PREDICTIONS)
        metrics = {"rouge_l": scores["rouge_l"], "bleu": scores["bleu"],
                   "length_ratio": round(scores["length_ratio"], 4), "n": scores["n"],
                   "references_per_sample": max(len(r) for r in refs),
                   "bleu_signature": scores["bleu_signature"], "model": c.model.name,
                   "adapter": str(adapter_dir) if adapter_dir else None,
                   "generation": {"greedy": True, "max_new_tokens": c.eval.max_new_tokens,
                                  "stop": c.eval.stop, "prompt_limit": limit,
                                  "prompts_cut": cut},
                   "seconds": round(seconds, 3), "fingerprint": fp}
        write_json(out / METRICS, metrics)
        log.info("ROUGE-L %.2f, BLEU-4 %.2f, %.2f words per reference word on %d samples "
                 "(%.1f s) -> %s", metrics["rouge_l"], metrics["bleu"], metrics["length_ratio"],
                 metrics["n"], seconds, out)
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


def adapter_fingerprint(adapter_dir: Path) -> str:
    """The adapter's identity: a hash of its config and weights."""
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"adapter {adapter_dir} has no {ADAPTER_CONFIG}: give a folder "
                          "written by `staff finetune`.")
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin"):
        path = adapter_dir / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable (not written yet)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
