"""Healing a draft whose layers were removed: distillation from the target's logits.

Without it the draft is ruined (SmolLM2-135M with 20 of 30 layers: response loss on DialogSum
2.2 -> 9.6), and its effort scores say little about the target. The draft's weights (all but the
embeddings, which it shares with the target) learn to match the target's next-token
distribution, KL(target || draft) at temperature tau, on every real token of the task's samples.

The loop is resumable like LoRA fine-tuning (``runs.resumable``): a checkpoint (trainable
weights, optimiser, schedule, RNG, step) is written atomically every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import DraftConfig
from ..runs import resumable
from ..training.batching import collate, shuffled_bucketed_batches
from ..training.losses import ScoringError

log = logging.getLogger(__name__)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over real tokens of KL(teacher || student), scaled by tau^2 (Hinton et al.)."""
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Every weight but the token embeddings and the LM head (often tied to them): the draft
    keeps the target's vocabulary space."""
    frozen = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        frozen.add(id(head.weight))
    return {n: p for n, p in model.named_parameters() if id(p) not in frozen}


def distill(student, teacher, examples: list, pad_id: int, cfg: DraftConfig, seed: int,
            work_dir: Path, show_progress: bool = True, student_examples: list | None = None,
            student_pad_id: int | None = None, teacher_columns=None) -> dict:
    """Train ``student`` in place for ``cfg.heal_steps`` steps. A draft with the task's
    vocabulary reads ``student_examples`` (the same samples, renumbered) and is matched to the
    teacher's logits at ``teacher_columns`` (the kept ids). Returns {"loss": [per step],
    "seconds": healing time, summed over resumed processes (as ``finetune_lora`` counts it),
    "seconds_before_resume": the earlier processes' part}."""
    from transformers import get_cosine_schedule_with_warmup

    device = next(student.parameters()).device
    params = trainable_parameters(student)
    for p in student.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.learning_rate, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * cfg.heal_steps), max(cfg.heal_steps, 1))
    ckpt = resumable.checkpoint_dir(work_dir)
    resumable.recover(ckpt)  # what a kill inside a save left behind
    step, history = 0, {"loss": []}
    if resumable.saved(ckpt):
        step, history = _load(ckpt, params, optimizer, scheduler)
        log.info("resuming healing at step %d of %d", step, cfg.heal_steps)
    clock = resumable.Clock(history)
    lengths = np.array([len(e.input_ids) for e in examples])
    per_epoch = max(1, len(examples) // cfg.batch_size)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    student_examples = examples if student_examples is None else student_examples
    student_pad_id = pad_id if student_pad_id is None else student_pad_id
    columns = (None if teacher_columns is None
               else torch.as_tensor(np.asarray(teacher_columns), device=device))
    student.train()
    bar = tqdm(total=cfg.heal_steps, initial=step, desc="healing (distillation)", unit="step",
               disable=not show_progress)
    order: dict[int, list] = {}  # epoch -> its batches, drawn once per epoch
    while step < cfg.heal_steps:
        epoch = step // per_epoch
        # The same batch order whether or not the run was resumed: it depends on the epoch.
        if epoch not in order:
            order.clear()
            order[epoch] = shuffled_bucketed_batches(
                lengths, cfg.batch_size, np.random.default_rng([seed, epoch]))[:per_epoch]
        batches = order[epoch]
        index = batches[step - epoch * per_epoch]
        batch = collate([examples[i] for i in index], pad_id, device)
        mine = collate([student_examples[i] for i in index], student_pad_id, device)
        with autocast:
            with torch.no_grad():
                teacher_logits = teacher(input_ids=batch["input_ids"],
                                         attention_mask=batch["attention_mask"],
                                         use_cache=False).logits
                if columns is not None:  # the teacher's distribution over the kept tokens
                    teacher_logits = teacher_logits[..., columns]
            student_logits = student(input_ids=mine["input_ids"],
                                     attention_mask=mine["attention_mask"],
                                     use_cache=False).logits
        loss = distillation_loss(student_logits, teacher_logits, batch["attention_mask"],
                                 cfg.temperature)
        if not torch.isfinite(loss):
            raise ScoringError(f"healing step {step + 1}: the distillation loss is "
                               f"{loss.item()}; lower draft.learning_rate.")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        history["loss"].append(round(loss.item(), 5))
        bar.update(1)
        bar.set_postfix(kl=f"{loss.item():.3f}")
        if step % cfg.checkpoint_every == 0 and step < cfg.heal_steps:
            clock.stamp(history)
            resumable.save(ckpt, step, history, optimizer, scheduler,
                           weights={n: p.detach() for n, p in params.items()})
    bar.close()
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return clock.close(history)


def _load(ckpt: Path, params, optimizer, scheduler) -> tuple[int, dict]:
    """The step and history of the checkpoint, the draft's weights, optimiser, schedule and
    generator restored. The format is ``resumable``'s, which draft folders always had."""
    step, history, trainer = resumable.load(ckpt, optimizer, scheduler)
    with torch.no_grad():
        for name, value in trainer["weights"].items():
            params[name].copy_(value)
    return step, history


@torch.no_grad()
def mean_response_loss(model, examples: list, pad_id: int, batch_size: int = 8) -> float:
    """Mean over samples of each one's mean response-token cross-entropy."""
    from ..training.losses import per_sample_losses

    device = next(model.parameters()).device
    losses = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_id, device)
        losses += per_sample_losses(model, batch).float().tolist()
    return float(np.mean(losses)) if losses else float("nan")
