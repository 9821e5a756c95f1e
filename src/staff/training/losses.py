"""The loss every trainer and scorer shares: each sample's mean cross-entropy over its own
response tokens (the L of the paper's Eq. 2), computed with the LM head run only at response
positions; and the error that names samples whose loss or score is NaN/inf.

Fine-tuning (``training.lora``), healing a draft (``draft.heal``), evaluation and the scoring
engine (``scoring.engine``) all import it from here.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


class ScoringError(ValueError):
    """Scores that cannot be trusted (NaN/inf); the message names the samples."""


@contextlib.contextmanager
def named_errors(what: str):
    """A ScoringError names the samples; this puts in front what was done with which model."""
    try:
        yield
    except ScoringError as err:
        raise ScoringError(f"{what}: {err}") from err


def _split_head(model):
    """(backbone, lm_head, softcap) of a causal LM, PEFT-wrapped or not; None if unknown."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, "model", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if backbone is None or head is None or not callable(backbone):
        return None
    cap = getattr(base.config, "final_logit_softcapping", None)
    return backbone, head, cap


def response_forward(model, batch: dict, want_hidden: bool = False) -> dict:
    """Logits at response positions only. Returns per-token tensors:
    logits (n, V) fp32, targets (n,), sample (n,) the row each token belongs to, and when
    ``want_hidden`` the mean final hidden state over each sample's response tokens (B, d)."""
    labels = batch["labels"]
    target_mask = labels[:, 1:] != -100            # position t predicts token t+1
    parts = _split_head(model)
    if parts is not None:
        backbone, head, cap = parts
        hidden = backbone(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).last_hidden_state
        logits = head(hidden[:, :-1][target_mask]).float()   # (n, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    else:  # any other causal LM: full logits, then keep the response positions
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=want_hidden)
        logits = out.logits[:, :-1][target_mask].float()
        hidden = out.hidden_states[-1] if want_hidden else None
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(target_mask)
    result = {"logits": logits, "targets": labels[:, 1:][target_mask], "sample": rows[target_mask]}
    if want_hidden:
        resp = (labels != -100).to(hidden.dtype)[..., None]
        result["hidden"] = ((hidden * resp).sum(1) / resp.sum(1).clamp(min=1)).float()
    return result


def per_sample_mean(values: torch.Tensor, sample: torch.Tensor, n: int) -> torch.Tensor:
    total = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, sample, values)
    count = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(
        0, sample, torch.ones_like(values))
    return total / count.clamp(min=1)


def per_sample_losses(model, batch: dict) -> torch.Tensor:
    """Mean response-token cross-entropy of each row (B,), differentiable."""
    out = response_forward(model, batch)
    token_loss = F.cross_entropy(out["logits"], out["targets"], reduction="none")
    return per_sample_mean(token_loss, out["sample"], batch["labels"].shape[0])
