"""`staff draft`: derive a same-family small model from the target, for STAFF's stage 1.

  1. rank the target's decoder layers by block influence on the task's prompts (layers.py);
  2. copy the target without its least influential layers;
  3. heal the copy by distillation from the target on the task's samples (heal.py);
  4. save it as an ordinary model folder (weights, config, tokenizer) plus draft.json, which
     records the kept layers, the influences, the healing curve and the response loss of the
     target, the pruned and the healed draft on held-out task samples.

Paper, Appendix A.5: when a family has no smaller member, prune the target; its Table 15 used a
pruned Llama-2-7b as the small model with little loss of selection quality.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RunConfig
from ..runs.folder import fingerprint, use_scratch, write_atomic, write_dir_atomic
from ..training.batching import collate, length_sorted_batches
from .heal import distill, mean_response_loss
from .layers import block_influence, decoder_layers, drop_layers, layers_to_keep

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Prompt:
    """The prompt part of a tokenized sample (what the layers are ranked on)."""

    input_ids: np.ndarray
    labels: np.ndarray


def make_draft(cfg: RunConfig, show_progress: bool = True) -> dict:
    """Build the draft of ``cfg.target`` on ``cfg.data`` into ``cfg.draft.output_dir``; returns
    what draft.json records."""
    from ..data import load_rows, to_examples, tokenize_examples
    from ..models.loading import load_model, load_tokenizer, pick_device

    d, started = cfg.draft, time.perf_counter()
    out = Path(d.output_dir).expanduser()
    torch.manual_seed(cfg.seed)
    examples = to_examples(load_rows(cfg.data), cfg.data, source=cfg.data.path)
    tokenizer = load_tokenizer(cfg.target)
    tokens = tokenize_examples(examples, tokenizer, cfg.data)
    order = np.random.default_rng(cfg.seed).permutation(len(tokens))
    held_out = [tokens[i] for i in order[:d.held_out]]
    train = [tokens[i] for i in order[d.held_out:]]
    if len(train) < d.batch_size:
        raise ValueError(f"{cfg.data.path}: {len(tokens)} samples leave {len(train)} for "
                         f"healing after draft.held_out == {d.held_out}; need at least "
                         f"draft.batch_size == {d.batch_size}.")
    device = pick_device(cfg.device)
    pad = tokenizer.pad_token_id

    teacher = load_model(cfg.target, device)
    total = len(decoder_layers(teacher))
    keep_n = d.keep_layers if d.keep_layers is not None else max(1, round(d.keep_fraction * total))
    if keep_n > total:
        raise ValueError(f"draft.keep_layers == {keep_n}, must be at most the target's {total} "
                         "decoder layers.")

    work = out.with_name(f".{out.name}.work")  # resumable healing; removed when done
    inputs = fingerprint(dataclasses.asdict(cfg.data), dataclasses.asdict(cfg.target),
                         {k: v for k, v in dataclasses.asdict(d).items()
                          if k not in ("output_dir", "checkpoint_every")}, cfg.seed)
    if use_scratch(work, inputs):
        log.info("discarding %s, left by a draft run with other inputs", work)

    ranking = work / "layers.json"
    if ranking.is_file():
        # A resumed run keeps the layers its checkpoint was trained with (a re-ranking on
        # another thread count could break a near tie the other way).
        saved = json.loads(ranking.read_text())
        influence, keep = np.array(saved["block_influence"]), saved["kept"]
    else:
        prompts = [_prompt_part(t) for t in train[:d.calibration_samples]]
        batches = length_sorted_batches(np.array([len(p.input_ids) for p in prompts]),
                                        d.batch_size)
        batches = tqdm(batches, desc="ranking layers", unit="batch", disable=not show_progress)
        influence = block_influence(teacher, (collate([prompts[i] for i in b], pad, device)
                                              for b in batches))
        keep = layers_to_keep(influence, keep_n)
        write_atomic(ranking, json.dumps({"block_influence": influence.tolist(), "kept": keep}))
    log.info("keeping %d of %d decoder layers: %s", len(keep), total, keep)

    student = load_model(cfg.target, device)
    drop_layers(student, keep)
    student.float()  # healing updates the weights: fp32 master weights (bf16 autocast on CUDA)
    student_tokenizer, vocab = tokenizer, None
    student_train, student_held, student_pad = train, held_out, pad
    if d.task_vocabulary:
        from .vocab import (check_same_split, remap_examples, shrink_model, shrink_tokenizer,
                            task_vocabulary)

        vocab, spec = task_vocabulary(tokenizer, [t.input_ids for t in tokens])
        student_tokenizer = shrink_tokenizer(tokenizer, spec)
        check_same_split(tokens, tokenize_examples(examples, student_tokenizer, cfg.data,
                                                   log_summary=False), vocab)
        shrink_model(student, vocab)
        student_train, student_held = remap_examples(train, vocab), remap_examples(held_out,
                                                                                   vocab)
        student_pad = student_tokenizer.pad_token_id
        log.info("task vocabulary: %d of %d tokens kept", vocab.size, len(tokenizer))
    losses = {"target": mean_response_loss(teacher, held_out, pad),
              "pruned": mean_response_loss(student, student_held, student_pad)}
    history = distill(student, teacher, train, pad, d, cfg.seed, work, show_progress,
                      student_examples=student_train, student_pad_id=student_pad,
                      teacher_columns=None if vocab is None else vocab.kept)
    losses["healed"] = mean_response_loss(student, student_held, student_pad)
    sizes = {"target": _count(teacher), "draft": _count(student)}
    del teacher

    saved_dtype = getattr(student.config, "dtype", None)
    if isinstance(saved_dtype, torch.dtype):
        student.to(saved_dtype)  # the target's own precision
    record = {
        "target": cfg.target.name, "data": cfg.data.path, "seed": cfg.seed,
        "layers": {"target": total, "kept": keep,
                   "removed": [i for i in range(total) if i not in keep]},
        "block_influence": [round(float(x), 6) for x in influence],
        "parameters": sizes,
        "vocabulary": {"target": len(tokenizer),
                       "draft": len(tokenizer) if vocab is None else vocab.size},
        "response_loss_held_out": {k: round(v, 4) for k, v in losses.items()},
        "held_out_samples": len(held_out), "heal_samples": len(train),
        "heal": {"steps": d.heal_steps, "first_kl": history["loss"][:1],
                 "last_kl": history["loss"][-1:], "kl": history["loss"]},
        "options": dataclasses.asdict(d),
        # Wall time, with what interrupted processes spent on the healing steps kept.
        "seconds": round(time.perf_counter() - started + history["seconds_before_resume"], 1),
        "heal_seconds": round(history["seconds"], 1),
    }

    def write(folder: Path) -> None:
        student.save_pretrained(folder)
        student_tokenizer.save_pretrained(folder)
        (folder / "draft.json").write_text(json.dumps(record, indent=2) + "\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    write_dir_atomic(out, write)
    shutil.rmtree(work, ignore_errors=True)
    log.info("draft: %d of %d layers, held-out response loss target %.3f, pruned %.3f, "
             "healed %.3f -> %s", len(keep), total, losses["target"], losses["pruned"],
             losses["healed"], out)
    return record


def _prompt_part(t) -> _Prompt:
    """The tokens before the first response token."""
    labels = np.asarray(t.labels)
    answer = np.flatnonzero(labels != -100)
    end = int(answer[0]) if len(answer) else len(labels)
    ids = np.asarray(t.input_ids[:max(end, 1)])
    return _Prompt(ids, np.full(len(ids), -100))


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())
