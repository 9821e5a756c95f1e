"""Length-bucketed batches and padding.

Samples of similar length go together so that padding stays small (padding is compute spent on
nothing). Padding is on the right: real tokens keep positions 0..L-1, exactly as when the
sample is run alone, so a score never depends on what it was batched with.
"""

from __future__ import annotations

import numpy as np
import torch


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Deterministic batches for scoring: indices sorted by length (stable), then chunked."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shuffled_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                              bucket_batches: int = 32) -> list[np.ndarray]:
    """Batches for training: a random permutation cut into mega-batches of ``bucket_batches``
    batches, each sorted by length and chunked, then the batch order shuffled. Random enough
    for SGD, and padding nearly as low as a global sort."""
    perm = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches = []
    span = batch_size * bucket_batches
    for start in range(0, len(perm), span):
        chunk = perm[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples: list, pad_id: int, device: torch.device | None = None) -> dict:
    """Right-padded input_ids / attention_mask / labels (-100 on prompt and padding)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.as_tensor(np.asarray(e.input_ids, dtype=np.int64))
        labels[row, :n] = torch.as_tensor(np.asarray(e.labels, dtype=np.int64))
        attention[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of the computed token slots that are padding."""
    lengths = np.asarray(lengths)
    slots = sum(len(b) * lengths[b].max() for b in batches if len(b))
    return 1.0 - lengths.sum() / max(slots, 1)
