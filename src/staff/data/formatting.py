"""Examples -> token ids with a response-only loss mask, exactly as the model trains on them.

The prompt goes through the tokenizer (or, with ``data.chat_template``, the tokenizer's chat
template), the response follows it, and the pair is cut to ``data.cutoff_len`` tokens; see
``tokenize_examples``. ``encode_prompt`` gives the same prompt ids for generation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from staff.config import DataConfig
from staff.data.examples import Example
from staff.data.sources import DataError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions without loss (prompt, padding); torch's CE default


@dataclass
class TokenizedExample:
    id: str
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt positions, the token id on response positions
    truncated: bool


def _ids(result) -> list[int]:
    """Token ids from a tokenizer/apply_chat_template result: a list, or (transformers 5) a
    dict/BatchEncoding; a batch of one is unwrapped."""
    if isinstance(result, Mapping) or hasattr(result, "input_ids"):
        result = result["input_ids"]
    if hasattr(result, "tolist"):
        result = result.tolist()
    result = list(result)
    if result and isinstance(result[0], (list, tuple)):
        result = list(result[0])
    return [int(t) for t in result]


def _chat(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    return _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                              tokenize=True))


def _chat_text(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                         tokenize=False)
    return text if isinstance(text, str) else text[0]


def _added_suffix(tokenizer) -> int:
    """How many special tokens the tokenizer appends (e.g. an EOS with add_eos_token); a prompt
    must not end in them or the model would learn that an EOS precedes every answer."""
    plain = _ids(tokenizer("a b", add_special_tokens=False))
    full = _ids(tokenizer("a b", add_special_tokens=True))
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return len(full) - start - len(plain)
    return 0


def check_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = (getattr(tokenizer, "staff_model_name", None) or getattr(tokenizer, "name_or_path", "")
                or type(tokenizer).__name__)
        raise DataError(f"data.chat_template is true but the tokenizer of {name} has no chat "
                        "template")


def encode_prompt(example: Example, tokenizer, cfg: DataConfig, *, _suffix: int | None = None
                  ) -> list[int]:
    """The prompt's token ids exactly as ``tokenize_examples`` builds them, untruncated; use it
    to generate answers with the same prompt the model was trained on."""
    if cfg.chat_template:
        check_chat_template(tokenizer)
        context = example.messages or [{"role": "user", "content": example.prompt.strip()}]
        return _chat(tokenizer, context, generation_prompt=True)
    ids = _ids(tokenizer(example.prompt, add_special_tokens=True))
    suffix = _added_suffix(tokenizer) if _suffix is None else _suffix
    return ids[:len(ids) - suffix] if suffix and len(ids) > suffix else ids


def _encode(example: Example, tokenizer, cfg: DataConfig, suffix: int) -> tuple[list, list]:
    prompt_ids = encode_prompt(example, tokenizer, cfg, _suffix=suffix)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if cfg.chat_template:
        context = example.messages or [{"role": "user", "content": example.prompt.strip()}]
        full = _chat(tokenizer, context + [{"role": "assistant", "content": example.response}],
                     generation_prompt=False)
        if len(full) > len(prompt_ids) and full[:len(prompt_ids)] == prompt_ids:
            # The template's own end-of-turn tokens stay in the response: the model must learn
            # to stop there.
            return prompt_ids, full[len(prompt_ids):]
        # The ids may differ only at the seam (a generation prompt ending in a space merges
        # with the answer's first word in BPE); then split the rendered text instead, so the
        # prompt ids stay those used at generation time and end-of-turn tokens are kept.
        prompt_text = _chat_text(tokenizer, context, generation_prompt=True)
        full_text = _chat_text(tokenizer, context + [{"role": "assistant",
                                                      "content": example.response}], False)
        if len(full_text) > len(prompt_text) and full_text.startswith(prompt_text):
            rest = _ids(tokenizer(full_text[len(prompt_text):], add_special_tokens=False))
            if rest:
                return prompt_ids, rest
        # Templates that render earlier turns differently once an answer follows (some strip
        # reasoning) do not extend the prompt at all: fall back to the bare response + EOS.
    response_ids = _ids(tokenizer(example.response, add_special_tokens=False)) + eos
    return prompt_ids, response_ids


# A text longer than cutoff_len * this many characters is cut before it is tokenized: only the
# prompt's last and the response's first cutoff_len tokens can be kept, and tokenizing a 30 MB
# row whole took 5.9 GB. Tokens are rarely longer than 32 characters; if they are, the limit
# grows until enough tokens come out.
_CHARS_PER_TOKEN = 32
# Tokens beyond the kept window that the cut text must still yield, so that the tokens at the
# cut (which may merge differently than in the whole text) are never among those kept.
_CUT_MARGIN = 16


def _encode_bounded(example: Example, tokenizer, cfg: DataConfig, suffix: int
                    ) -> tuple[list, list]:
    """``_encode`` with memory that follows ``cfg.cutoff_len``, not the row's length: the
    prompt texts are cut from the left and the response from the right before tokenizing."""
    need = cfg.cutoff_len + _CUT_MARGIN
    limit = cfg.cutoff_len * _CHARS_PER_TOKEN
    contents = [m.get("content") for m in example.messages or []]
    while True:
        prompt_cut = len(example.prompt) > limit or any(
            isinstance(c, str) and len(c) > limit for c in contents)
        response_cut = len(example.response) > limit
        if not (prompt_cut or response_cut):
            return _encode(example, tokenizer, cfg, suffix)
        cut = dataclasses.replace(
            example, prompt=example.prompt[-limit:], response=example.response[:limit],
            messages=None if example.messages is None else [
                {**m, "content": m["content"][-limit:]} if isinstance(m.get("content"), str)
                else m for m in example.messages])
        prompt_ids, response_ids = _encode(cut, tokenizer, cfg, suffix)
        if ((not prompt_cut or len(prompt_ids) >= need)
                and (not response_cut or len(response_ids) >= need)):
            return prompt_ids, response_ids
        limit *= 4


def _truncate(prompt: list[int], response: list[int], cutoff: int, bos: int | None
              ) -> tuple[list[int], list[int]]:
    """Fit into ``cutoff`` tokens: drop prompt tokens from the left first (a leading BOS stays,
    and at least one prompt token after it), then cut the response from the right (at least
    one response token stays)."""
    keep_first = 1 if bos is not None and len(prompt) > 1 and prompt[0] == bos else 0
    min_prompt = min(len(prompt), keep_first + 1)
    assert cutoff >= min_prompt + 1, f"cutoff_len {cutoff} leaves no room for the response"
    n_prompt = max(min_prompt, min(len(prompt), cutoff - len(response)))
    tail = n_prompt - keep_first
    prompt = prompt[:keep_first] + (prompt[len(prompt) - tail:] if tail else [])
    return prompt, response[:cutoff - n_prompt]


def tokenize_examples(examples: list[Example], tokenizer, cfg: DataConfig,
                      log_summary: bool = True) -> list[TokenizedExample]:
    """Token ids and labels (loss on response tokens only), at most ``cfg.cutoff_len`` long.

    Without a chat template: ``tokenizer(prompt)`` (with special tokens, e.g. BOS) followed by
    ``tokenizer(response)`` (without) and EOS. With ``cfg.chat_template``: the prompt is the
    context rendered with ``add_generation_prompt=True``, the response is whatever the full
    conversation (context + assistant answer) adds after it, end-of-turn tokens included
    (split on token ids; if those differ at the seam, on the rendered text; if the template
    does not extend the prompt at all, the response text + EOS).
    Too-long samples lose prompt tokens from the left first, then response tokens from the
    right (see ``_truncate``); they are marked ``truncated`` and their count is logged.
    """
    if cfg.chat_template:
        check_chat_template(tokenizer)
    suffix = 0 if cfg.chat_template else _added_suffix(tokenizer)
    out = []
    for ex in examples:
        prompt_ids, response_ids = _encode_bounded(ex, tokenizer, cfg, suffix)
        if not response_ids:
            raise DataError(f"example {ex.id}: the response tokenizes to nothing and the "
                            "tokenizer has no EOS token")
        truncated = len(prompt_ids) + len(response_ids) > cfg.cutoff_len
        if truncated:
            prompt_ids, response_ids = _truncate(prompt_ids, response_ids, cfg.cutoff_len,
                                                 tokenizer.bos_token_id)
        out.append(TokenizedExample(ex.id, prompt_ids + response_ids,
                                    [IGNORE_INDEX] * len(prompt_ids) + response_ids, truncated))
    if log_summary:
        log.info("tokenized %d examples; %d truncated to data.cutoff_len=%d", len(out),
                 sum(t.truncated for t in out), cfg.cutoff_len)
    return out


@dataclass
class CompactTokens:
    """A tokenized sample held compactly: int32 arrays (a Python list of ints costs ~8x more,
    which matters at millions of samples)."""
    id: str
    input_ids: np.ndarray
    labels: np.ndarray
    truncated: bool


def tokenize_compact(examples: list[Example], tokenizer, cfg: DataConfig,
                     chunk: int = 8192) -> list[CompactTokens]:
    """``tokenize_examples`` chunk by chunk, keeping only the compact arrays."""
    out = []
    for start in range(0, len(examples), chunk):
        for t in tokenize_examples(examples[start:start + chunk], tokenizer, cfg,
                                   log_summary=False):
            out.append(CompactTokens(t.id, np.asarray(t.input_ids, dtype=np.int32),
                                     np.asarray(t.labels, dtype=np.int32), t.truncated))
    return out
