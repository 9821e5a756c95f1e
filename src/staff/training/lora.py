"""LoRA fine-tuning with a plain loop under accelerate (data-parallel when launched so).

Stage 1 of STAFF fine-tunes the small model on the full data for T epochs; the same loop
fine-tunes a target on a coreset. Loss: mean over each sample's response tokens, then the mean
over the batch (every sample weighs the same, whatever its length).

Checkpoints (adapter, optimiser, scheduler, RNG, step) are written atomically every
``checkpoint_every`` optimiser steps and at each epoch end; a restarted run resumes from the last
one and replays the same batch order, so it ends where an uninterrupted run ends.

A ``stop_check`` (stage 1's early stop, ``stages/train.py``) is called every ``every`` epochs
with the model being trained; when it says stop, the step is checkpointed with the stop in the
history, so a resumed run stops there too.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import FinetuneConfig
from ..runs import resumable
from .batching import collate, shuffled_bucketed_batches
from .losses import ScoringError, per_sample_losses

log = logging.getLogger(__name__)


def finetune_lora(model, examples: list, pad_id: int, cfg: FinetuneConfig, seed: int,
                  work_dir: str | Path, accelerator=None, checkpoint_every: int = 50,
                  show_progress: bool = True, total_steps: int | None = None,
                  stop_check=None) -> dict:
    """Train the LoRA parameters of ``model`` (a PeftModel) in place. Returns the history
    {"loss": [per optimiser step], "steps": int, "seconds": training time,
    "seconds_before_resume": the part of it spent by earlier, interrupted processes}.
    ``work_dir`` holds the resumable checkpoint. ``total_steps``: train exactly this many
    optimiser steps, cycling over the data epoch after epoch (the ``steps`` protocol of the
    benchmark); None: ``cfg.epochs`` epochs. The time counts each kept step once: steps
    after the last checkpoint of a killed process are redone and counted when redone, so a
    resumed run reports about what an uninterrupted one would.

    ``stop_check``: None, or an object with ``every`` (epochs between calls) called as
    ``stop_check(model, step, history) -> bool`` (True: stop training here); it may record
    what it needs in ``history``, which the checkpoint keeps."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    # One process: stay on the device the model is on (accelerate would pick cuda:0 itself).
    accelerator = accelerator or Accelerator(cpu=next(model.parameters()).device.type == "cpu")
    work_dir = Path(work_dir)
    ckpt_dir = resumable.checkpoint_dir(work_dir)
    lengths = np.array([len(e.input_ids) for e in examples])
    world, rank = accelerator.num_processes, accelerator.process_index
    # Each optimiser step consumes world × grad_accum micro-batches of batch_size samples.
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    steps_per_epoch = max(1, per_epoch // (world * cfg.grad_accum))
    if total_steps is None:
        total_steps = planned_steps(len(examples), cfg, world)
    elif total_steps < 1:
        raise ValueError(f"total_steps == {total_steps}, must be >= 1.")
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    history = {"loss": [], "steps": 0}
    step = 0
    if accelerator.is_main_process:
        resumable.recover(ckpt_dir)  # what a kill inside a save left behind
    accelerator.wait_for_everyone()
    if resumable.saved(ckpt_dir):
        step, history = _load_checkpoint(ckpt_dir, accelerator, model, optimizer, scheduler)
        log.info("resuming fine-tuning at step %d of %d", step, total_steps)
    if history.get("stopped_early_at") is not None:
        total_steps = step  # the check said stop before the interruption: stay stopped
    check_every = (max(1, int(round(stop_check.every * steps_per_epoch)))
                   if stop_check is not None else None)
    clock = resumable.Clock(history)
    if cfg.gradient_checkpointing:
        _set_gradient_checkpointing(accelerator.unwrap_model(model), True)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="fine-tuning", unit="step",
               disable=not (show_progress and accelerator.is_main_process))
    epoch = step // steps_per_epoch
    while step < total_steps:
        rng = np.random.default_rng([seed, epoch])
        batches = shuffled_bucketed_batches(lengths, cfg.batch_size, rng)
        usable = steps_per_epoch * world * cfg.grad_accum
        # Drop (or wrap) the tail so that every rank takes the same number of steps.
        batches = [batches[i % len(batches)] for i in range(usable)]
        start = (step - epoch * steps_per_epoch) * world * cfg.grad_accum
        for s in range(start, usable, world * cfg.grad_accum):
            if step >= total_steps:
                break
            group = batches[s:s + world * cfg.grad_accum][rank::world]
            losses, bad = [], []
            for micro, index in enumerate(group):
                batch = collate([examples[i] for i in index], pad_id, accelerator.device)
                sync = micro == len(group) - 1
                ctx = accelerator.no_sync(model) if not sync and world > 1 else _null()
                with ctx:
                    per_sample = per_sample_losses(model, batch)
                    loss = per_sample.mean() / len(group)
                    accelerator.backward(loss)
                losses.append(loss.detach() * len(group))
                finite = torch.isfinite(per_sample.detach()).tolist()
                bad += [examples[i].id for i, ok in zip(index, finite) if not ok]
            # Summed over processes, so that all of them stop at the same step.
            n_bad = int(accelerator.reduce(torch.tensor(len(bad), device=accelerator.device),
                                           reduction="sum").item())
            if n_bad:
                shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
                raise ScoringError(f"step {step + 1} of {total_steps}: {n_bad} "
                                   f"sample(s) have a NaN or inf loss: {shown}")
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
            history["loss"].append(mean_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            checked = check_every is not None and step % check_every == 0 and step < total_steps
            if checked and _check_says_stop(stop_check, accelerator, model, params, cfg, step,
                                            history):
                history["stopped_early_at"] = step
                total_steps = step
            if (checked or step % checkpoint_every == 0 or step % steps_per_epoch == 0
                    or step == total_steps):
                history["steps"] = step
                clock.stamp(history)
                _save_checkpoint(ckpt_dir, accelerator, model, optimizer, scheduler, step, history)
        epoch += 1
    bar.close()
    model.eval()
    if cfg.gradient_checkpointing:
        # Scoring runs on this model next: its hooks must see one forward per sample.
        _set_gradient_checkpointing(accelerator.unwrap_model(model), False)
    history["steps"] = step
    return clock.close(history)


def _check_says_stop(stop_check, accelerator, model, params, cfg, step, history) -> bool:
    """Run the stop check on the model being trained, then put it back as training wants it
    (the check scores in eval mode, with gradients on the LoRA tensors in its scope only and
    gradient checkpointing off). Every process checks; they stop if any says so."""
    unwrapped = accelerator.unwrap_model(model)
    if cfg.gradient_checkpointing:
        _set_gradient_checkpointing(unwrapped, False)
    stop = bool(stop_check(unwrapped, step, history))
    for p in params:
        p.requires_grad_(True)
    unwrapped.zero_grad(set_to_none=True)
    if cfg.gradient_checkpointing:
        _set_gradient_checkpointing(unwrapped, True)
    model.train()
    votes = accelerator.reduce(torch.tensor(int(stop), device=accelerator.device), reduction="sum")
    return int(votes.item()) > 0


def planned_steps(n_samples: int, cfg: FinetuneConfig, world: int = 1) -> int:
    """Optimiser steps of ``cfg.epochs`` epochs over ``n_samples`` samples on ``world``
    processes: what ``finetune_lora`` trains when no step count is given."""
    per_epoch = math.ceil(n_samples / cfg.batch_size)
    steps_per_epoch = max(1, per_epoch // (world * cfg.grad_accum))
    return max(1, int(round(cfg.epochs * steps_per_epoch)))


def _set_gradient_checkpointing(model, on: bool) -> None:
    """Recompute activations in the backward pass (non-reentrant: LoRA's frozen inputs need no
    requires_grad, and dropout replays the same masks)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x names
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _save_checkpoint(ckpt_dir, accelerator, model, optimizer, scheduler, step, history):
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    resumable.save(ckpt_dir, step, history, optimizer, scheduler,
                   write=lambda d: unwrapped.save_pretrained(d / "adapter",
                                                             save_embedding_layers=False))


def _load_checkpoint(ckpt_dir, accelerator, model, optimizer, scheduler):
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(ckpt_dir / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(accelerator.unwrap_model(model), weights)
    step, history, _ = resumable.load(ckpt_dir, optimizer, scheduler)
    return step, history


def check_finite_losses(losses: list[float], name: str) -> None:
    """A NaN/inf loss while fine-tuning spoils the adapter (and every score after it): stop
    before it is saved and recorded as done."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, dtype=np.float64)))
    if len(bad):
        raise ScoringError(f"fine-tuning {name}: NaN or inf loss at step "
                           f"{bad[0] + 1} of {len(losses)}; look for samples or weights that "
                           "overflow, or lower finetune.learning_rate.")
