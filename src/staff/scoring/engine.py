"""The one batched scoring engine: per-sample effort, loss, EL2N (and embeddings) in one pass.

Effort (paper Eq. 2): S_d = ||∇_φ L(θ(d))||₂, φ = the LoRA parameters in scope, L = the mean
cross-entropy over d's own response tokens.

How it is batched: one forward and one backward per batch. The batch loss is the SUM of the
per-sample means, so the gradient reaching sample b's rows is exactly the gradient of b's own
loss (samples never interact: right padding, causal attention, dropout off). Every LoRA tensor
is an ``nn.Linear`` (lora_A: d_in→r, lora_B: r→d_out); a sample's weight gradient is
G_b = Σ_t g_bt a_btᵀ over its tokens, with a the layer input (forward hook) and g the gradient
of the layer output (tensor hook). We form G_b explicitly (cheap for LoRA: r×d_in and d_out×r)
and add ||G_b||²_F to the sample's running sum in fp32, whatever dtype the model runs in.

The LM head runs only at positions that predict a response token: on short samples with a big
vocabulary it is much of the cost, and the other positions carry no loss.
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..runs.folder import atomic_open
from ..training.batching import collate, length_sorted_batches
from ..training.losses import ScoringError, per_sample_mean, response_forward

log = logging.getLogger(__name__)

_LAYER_INDEX = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


# ----------------------------------------------------------------------------- LoRA tensors

def lora_linears(model, scope: Literal["all", "last-layer"] = "all") -> list[tuple[str, torch.nn.Linear]]:
    """The active adapter's lora_A / lora_B linears in scope, by module name."""
    from peft.tuners.lora import LoraLayer

    found = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    found.append((f"{name}.lora_A", module.lora_A[adapter]))
                    found.append((f"{name}.lora_B", module.lora_B[adapter]))
    if not found:
        raise ValueError("the model has no LoRA layers: attach an adapter before scoring.")
    if scope == "last-layer":
        layer_of = {n: int(m.group(1)) for n, _ in found if (m := _LAYER_INDEX.search(n))}
        if not layer_of:
            raise ValueError("scope 'last-layer': cannot tell decoder layers apart in module names.")
        last = max(layer_of.values())
        found = [(n, mod) for n, mod in found if layer_of.get(n) == last]
    return found


def set_trainable(model, modules: list[tuple[str, torch.nn.Linear]]) -> None:
    """Only the LoRA tensors in scope get gradients, so backward stops where they end."""
    for param in model.parameters():
        param.requires_grad_(False)
    for _, module in modules:
        for param in module.parameters():
            param.requires_grad_(True)


class PerSampleGradNorms:
    """Hooks that add each sample's squared gradient norm of hooked linears into ``sq``."""

    def __init__(self, modules: list[tuple[str, torch.nn.Linear]]):
        self.sq: torch.Tensor | None = None
        self._handles = [m.register_forward_hook(self._forward) for _, m in modules]

    def reset(self, batch_size: int, device: torch.device) -> None:
        self.sq = torch.zeros(batch_size, dtype=torch.float32, device=device)

    def _forward(self, module, inputs, output):
        if not output.requires_grad:
            return
        activation = inputs[0].detach()

        def on_grad(grad_out: torch.Tensor) -> None:
            # (B, out, in) per-sample weight gradient, fp32 even for bf16 models.
            g = torch.einsum("bto,bti->boi", grad_out.float(), activation.float())
            self.sq += g.pow(2).sum(dim=(1, 2))
            if module.bias is not None:
                self.sq += grad_out.float().sum(dim=1).pow(2).sum(dim=1)

        output.register_hook(on_grad)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


# ----------------------------------------------------------------------------- scoring

@dataclass
class ScoreTable:
    """Per-sample scores; row i belongs to ``ids[i]`` (input order, not batch order)."""

    ids: list[str]
    effort: np.ndarray
    loss: np.ndarray
    el2n: np.ndarray
    n_tokens: np.ndarray
    embeddings: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"effort": self.effort, "loss": self.loss, "el2n": self.el2n}


def _score_batch(model, batch, recorder, want_grad: bool, want_hidden: bool) -> dict:
    n = batch["labels"].shape[0]
    if recorder is not None:
        recorder.reset(n, batch["labels"].device)
    with torch.set_grad_enabled(want_grad):
        out = response_forward(model, batch, want_hidden=want_hidden)
        token_loss = F.cross_entropy(out["logits"], out["targets"], reduction="none")
        loss = per_sample_mean(token_loss, out["sample"], n)
        if want_grad:
            # Sum of per-sample means: each sample's rows receive its own gradient.
            loss.sum().backward()
    with torch.no_grad():
        probs = out["logits"].detach().softmax(-1)
        p_true = probs.gather(1, out["targets"][:, None]).squeeze(1)
        # ||softmax(z) - onehot(y)||₂ = sqrt(Σp² - 2 p_y + 1)
        el2n_tok = (probs.pow(2).sum(-1) - 2 * p_true + 1).clamp(min=0).sqrt()
        el2n = per_sample_mean(el2n_tok, out["sample"], n)
    result = {"loss": loss.detach().float().cpu().numpy(), "el2n": el2n.float().cpu().numpy(),
              "effort": (recorder.sq.sqrt().cpu().numpy() if recorder is not None
                         else np.full(n, np.nan, dtype=np.float32))}
    if want_hidden:
        result["hidden"] = out["hidden"].detach().cpu().numpy()
    return result


def score_samples(model, examples: list, pad_id: int, *, batch_size: int = 8,
                  scope: Literal["all", "last-layer"] = "all", effort: bool = True,
                  embeddings: bool = False, device: torch.device | None = None,
                  shard_dir: str | Path | None = None, shard_size: int = 1024,
                  desc: str = "scoring", show_progress: bool = True,
                  accelerator=None, _only_shards: set | None = None,
                  _read_only: bool = False) -> ScoreTable:
    """Score every example (objects with id / input_ids / labels) in length-bucketed batches.

    With ``shard_dir``, finished shards of ``shard_size`` samples are written there
    atomically and reused when the same call is repeated after an interruption.

    Under ``accelerate launch`` (an ``accelerator`` with several processes), shard s is scored
    by process s mod world; every process writes its shards to ``shard_dir`` (required, on a
    filesystem all processes see), then all of them read the merged table.
    """
    device = device or next(model.parameters()).device
    n = len(examples)
    lengths = np.array([len(e.input_ids) for e in examples])
    batches = length_sorted_batches(lengths, batch_size)
    shard_of_batch = _shards(batches, shard_size)
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    if world > 1:
        if shard_dir is None:
            raise ValueError("scoring with several processes needs a shard_dir.")
        mine = {s: b for s, b in shard_of_batch.items() if s % world == rank}
        score_samples(model, examples, pad_id, batch_size=batch_size, scope=scope, effort=effort,
                      embeddings=embeddings, device=device, shard_dir=shard_dir,
                      shard_size=shard_size, desc=desc, show_progress=show_progress and rank == 0,
                      _only_shards=set(mine))
        accelerator.wait_for_everyone()
        # Every shard is on disk now: reading them all is the merge.
        return score_samples(model, examples, pad_id, batch_size=batch_size, scope=scope,
                             effort=effort, embeddings=embeddings, device=device,
                             shard_dir=shard_dir, shard_size=shard_size, desc=desc,
                             show_progress=False, _only_shards=None, _read_only=True)
    model.eval()  # dropout off: scores are deterministic
    recorder = None
    if effort:
        modules = lora_linears(model, scope)
        set_trainable(model, modules)
        recorder = PerSampleGradNorms(modules)
    columns = _Columns(n)
    shard_dir = Path(shard_dir) if shard_dir else None
    if shard_dir:
        shard_dir.mkdir(parents=True, exist_ok=True)
    try:
        todo = {s: b for s, b in shard_of_batch.items()
                if _only_shards is None or s in _only_shards}
        bar = tqdm(total=sum(len(i) for b in todo.values() for i in b), desc=desc,
                   unit="sample", disable=not show_progress)
        for shard, shard_batches in todo.items():
            cached = _load_shard(shard_dir, shard, n) if shard_dir else None
            if cached is None and _read_only:
                raise ScoringError(f"shard {shard} of the scores is missing from {shard_dir}: "
                                   "a process did not finish its part.")
            if cached is not None:  # finished before an interruption
                columns.put(cached.pop("index"), cached)
                bar.update(sum(len(i) for i in shard_batches))
                continue
            collected = []
            for index in shard_batches:
                batch = collate([examples[i] for i in index], pad_id, device)
                part = _score_batch(model, batch, recorder, effort, embeddings)
                model.zero_grad(set_to_none=True)
                collected.append((index, part))
                bar.update(len(index))
            idx = np.concatenate([i for i, _ in collected])
            merged = {k: np.concatenate([p[k] for _, p in collected]) for k in collected[0][1]}
            columns.put(idx, merged)
            if shard_dir:
                _save_shard(shard_dir, shard, n, idx, merged)
        bar.close()
    finally:
        if recorder is not None:
            recorder.close()
    if _only_shards is not None:
        return None  # a worker's part: its shards are on disk, the merge reads them
    table = ScoreTable(ids=[e.id for e in examples], effort=columns.values["effort"],
                       loss=columns.values["loss"], el2n=columns.values["el2n"],
                       n_tokens=np.array([np.count_nonzero(np.asarray(e.labels) != -100)
                                          for e in examples]),
                       embeddings=columns.hidden)
    check_finite(table, effort)
    return table


class _Columns:
    """Per-sample results in input order, filled shard by shard."""

    def __init__(self, n: int):
        self.n = n
        self.values = {k: np.full(n, np.nan, dtype=np.float32) for k in ("effort", "loss", "el2n")}
        self.hidden: np.ndarray | None = None

    def put(self, index: np.ndarray, part: dict) -> None:
        for key, values in part.items():
            if key == "hidden":
                if self.hidden is None:
                    self.hidden = np.zeros((self.n, values.shape[1]), dtype=np.float32)
                self.hidden[index] = values
            else:
                self.values[key][index] = values


def check_finite(table: ScoreTable, effort: bool = True) -> None:
    names = ("effort", "loss", "el2n") if effort else ("loss", "el2n")
    bad = np.zeros(len(table.ids), dtype=bool)
    for name in names:
        bad |= ~np.isfinite(getattr(table, name))
    if bad.any():
        which = [table.ids[i] for i in np.flatnonzero(bad)]
        shown = ", ".join(which[:5]) + (" ..." if len(which) > 5 else "")
        raise ScoringError(f"{len(which)} sample(s) have a NaN or inf loss or gradient: {shown}")


def _shards(batches: list[np.ndarray], shard_size: int) -> dict[int, list[np.ndarray]]:
    shards: dict[int, list[np.ndarray]] = {}
    count = 0
    for batch in batches:
        shards.setdefault(count // shard_size, []).append(batch)
        count += len(batch)
    return shards


def _shard_path(shard_dir: Path, shard: int, n: int) -> Path:
    return shard_dir / f"shard-{shard:06d}-of-n{n}.npz"


def _load_shard(shard_dir: Path, shard: int, n: int) -> dict | None:
    path = _shard_path(shard_dir, shard, n)
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # Torn by a power loss (a kill cannot: shards are renamed into place): score it again.
        log.warning("score shard %s is unreadable (%s); scoring it again", path, err)
        return None


def _save_shard(shard_dir: Path, shard: int, n: int, index: np.ndarray, values: dict) -> None:
    with atomic_open(_shard_path(shard_dir, shard, n)) as fh:
        np.savez(fh, index=index, **values)
