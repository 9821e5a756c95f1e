"""Greedy generation from prompt token ids, batched with left padding.

Training pads on the right (``scoring.batching.collate``); generation pads on the LEFT, so every
prompt's last token sits in the last column and new tokens append to all rows at once. The
attention mask hides the padding, and transformers derives position ids from it, so a prompt
gets the same tokens whether it runs alone or in a batch (tested).
"""

from __future__ import annotations

import contextlib
import logging

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, max_len), padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids, mask


def fit_prompt(prompt: list[int], limit: int, bos: int | None) -> list[int]:
    """Keep at most ``limit`` tokens: the prompt's end (where the instruction to answer is) and a
    leading BOS, as training truncates prompts (``data.formatting._truncate``)."""
    if len(prompt) <= limit:
        return prompt
    keep_first = 1 if bos is not None and prompt[0] == bos and limit > 1 else 0
    return prompt[:keep_first] + prompt[len(prompt) - (limit - keep_first):]


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to the first stop string after its leading whitespace, stripped. A model
    often answers "Summary:" with a line break first; that one must not end the answer."""
    text = text.lstrip()
    end = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:end].strip()


class _StopAfterText:
    """A stopping criterion (transformers' protocol: a bool per row): a row is done once its
    new text, leading whitespace aside, holds a stop string. transformers' own ``stop_strings``
    would also stop at a leading line break, before the answer starts."""

    def __init__(self, tokenizer, stop: list[str], prompt_width: int):
        self.tokenizer, self.stop, self.width = tokenizer, stop, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = []
        for row in input_ids[:, self.width:].tolist():
            text = self.tokenizer.decode(row, skip_special_tokens=True).lstrip()
            done.append(any(s in text for s in self.stop))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """torch's intra-op threads set to ``n`` inside the block (None: unchanged), then restored."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def greedy_generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
                    batch_size: int = 8, device: torch.device | None = None,
                    stop: list[str] | None = None, show_progress: bool = True,
                    desc: str = "generating", threads: int | None = None) -> list[str]:
    """Greedy (do_sample=False) continuation of every prompt, decoded without special tokens and
    cut at EOS and at ``stop`` strings; one string per prompt, in the prompts' order.
    ``threads``: CPU threads while decoding (only on a CPU device)."""
    device = device or next(model.parameters()).device
    with cpu_threads(threads if device.type == "cpu" else None), torch.inference_mode():
        return _generate(model, tokenizer, prompts, max_new_tokens, batch_size, device,
                         stop or [], show_progress, desc)


def _generate(model, tokenizer, prompts, max_new_tokens, batch_size, device, stop,
              show_progress, desc) -> list[str]:
    pad_id = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    # Longest first, so that the memory peak shows in the first batch; similar lengths batch
    # together, so little padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=desc, unit="sample", disable=not show_progress)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids, mask = left_pad([prompts[i] for i in index], pad_id)
        # Stop strings also end a row's decoding early (an untuned model rarely emits EOS and
        # would run to max_new_tokens); the text is cut at them after decoding all the same.
        extra = {}
        if stop:
            from transformers import StoppingCriteriaList

            extra["stopping_criteria"] = StoppingCriteriaList(
                [_StopAfterText(tokenizer, list(stop), ids.shape[1])])
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
            num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad_id,
            temperature=None, top_p=None, top_k=None, **extra)
        new = generated[:, ids.shape[1]:].tolist()
        for i, tokens in zip(index, new):
            if eos is not None and eos in tokens:
                tokens = tokens[:tokens.index(eos)]
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            out[i] = cut_at_stop(text, stop)
        bar.update(len(index))
    bar.close()
    model.train(was_training)
    return out  # type: ignore[return-value]
