"""Rows -> (prompt, response) examples with stable ids -> token ids with a response-only loss mask.

Formats (``data.format``):

* ``alpaca``: fields ``instruction``, optional ``input``, ``output``. The prompt is
  ``instruction + "\\n\\n"`` or, with a non-empty input,
  ``instruction + "\\n\\n" + input + "\\n\\n"``;
  the response is ``output``. The prompt ends in a blank line so that, without a chat template,
  the answer starts on its own line (prompt and response are tokenized separately and joined).
* ``prompt_completion``: fields ``prompt`` and ``completion`` (or ``response`` / ``output``),
  joined verbatim: put any separator into the data.
* ``messages``: a list of ``{role, content}`` under ``messages`` (or ShareGPT
  ``{from, value}`` under ``conversations``). The response is the last assistant message; the
  turns before it are the context (turns after it are dropped). Without a chat template the
  context is rendered as ``role: content`` lines followed by ``assistant:`` and a newline.
* ``template``: ``data.prompt_template`` / ``data.response_template`` are ``str.format``
  strings over the row's fields, used verbatim.
* ``auto``: the first row's keys decide: messages, then alpaca, then prompt_completion.

With ``data.chat_template`` the prompt (stripped) or the context turns go through the
tokenizer's chat template instead; see ``tokenize_examples``.

Rows are counted from 1 everywhere: "row 1" is the first row (in a JSON Lines file without
blank lines, line 1), messages about a file's syntax name its 1-based line, and a row without an
id gets its row number as id ("1" for the first row), so an error, an id and the row a user
opens in an editor agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from staff.config import DataConfig
from staff.data.sources import DataError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions without loss (prompt, padding); torch's CE default
COMPLETION_FIELDS = ("completion", "response", "output")
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                   "assistant": "assistant"}


@dataclass
class Example:
    id: str
    prompt: str
    response: str
    row: dict  # the original row, untouched
    # messages format only: the {role, content} turns before the response (for chat templates)
    messages: list[dict] | None = None


@dataclass
class TokenizedExample:
    id: str
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt positions, the token id on response positions
    truncated: bool


# ----------------------------------------------------------------------------- rows -> examples

def detect_format(row: dict, source: str = "data") -> str:
    keys = set(row)
    if keys & {"messages", "conversations"}:
        return "messages"
    if "instruction" in keys:
        return "alpaca"
    if "prompt" in keys:
        return "prompt_completion"
    raise DataError(f"{source}: cannot detect the data format from the first row's keys "
                    f"({', '.join(sorted(map(_shown, keys)))}); set data.format=template with "
                    "data.prompt_template and data.response_template, e.g. "
                    "'Summarize:\\n{dialogue}\\n' and '{summary}'")


def to_examples(rows: list[dict], cfg: DataConfig, source: str = "data") -> list[Example]:
    """One Example per row, in order; ids from ``cfg.id_field`` or the row number."""
    if not rows:
        raise DataError(f"{source}: no rows")
    fmt = detect_format(rows[0], source) if cfg.format == "auto" else cfg.format
    examples: list[Example] = []
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"{source} row {number}: a {type(row).__name__}, expected a mapping")
        value = row.get(cfg.id_field)
        sid = str(number) if value is None or str(value).strip() == "" else str(value)
        if sid.splitlines() != [sid]:
            # ids.txt holds one id a line (read back with splitlines): such an id would
            # become two, or none.
            raise DataError(f"{source} row {number} (id {_shown(sid)}): the id holds a line "
                            f"break (field '{cfg.id_field}'); ids must be one line")
        if sid in first_row:
            raise DataError(f"{source} rows {first_row[sid]} and {number}: duplicate id "
                            f"'{_shown(sid)}' "
                            f"(field '{cfg.id_field}'); ids must be unique")
        first_row[sid] = number
        where = f"{source} row {number} (id {_shown(sid)})"
        examples.append(_FORMATTERS[fmt](row, cfg, where, sid))
    log.info("%s: %d examples, format %s", source, len(examples), fmt)
    return examples


def _shown(value) -> str:
    """A key or id from the data, as it goes into a message: escaped if it holds a line break
    or other control characters, so that the message stays one line."""
    text = str(value)
    return text if text.isprintable() else repr(text)[1:-1]


def _text(row: Mapping, field: str, where: str, kind: str, required: bool = True) -> str:
    """The field as text; missing/empty (after strip) is an error when required."""
    if field not in row or row[field] is None:
        if required:
            raise DataError(f"{where}: missing {kind} field '{field}'")
        return ""
    value = row[field]
    if isinstance(value, (list, dict)):
        raise DataError(f"{where}: {kind} field '{field}' is a {type(value).__name__}, expected "
                        "text")
    text = value if isinstance(value, str) else str(value)  # numbers (e.g. an answer 42) are fine
    if required and not text.strip():
        raise DataError(f"{where}: empty {kind} field '{field}'")
    return text


def _alpaca(row, cfg, where, sid) -> Example:
    instruction = _text(row, "instruction", where, "prompt")
    extra = _text(row, "input", where, "input", required=False)
    response = _text(row, "output", where, "response")
    prompt = instruction + "\n\n" + (extra + "\n\n" if extra.strip() else "")
    return Example(sid, prompt, response, row)


def _prompt_completion(row, cfg, where, sid) -> Example:
    prompt = _text(row, "prompt", where, "prompt")
    name = next((f for f in COMPLETION_FIELDS if f in row), COMPLETION_FIELDS[0])
    return Example(sid, prompt, _text(row, name, where, "response"), row)


def _messages(row, cfg, where, sid) -> Example:
    field = "messages" if "messages" in row else "conversations"
    turns = row.get(field)
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of messages")
    msgs = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise DataError(f"{where}: {field}[{i}] is a {type(turn).__name__}, expected "
                            "{role, content}")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role is None or content is None:
            raise DataError(f"{where}: {field}[{i}] needs 'role' and 'content' (or 'from' and "
                            "'value')")
        msgs.append({"role": _SHAREGPT_ROLES.get(str(role), str(role)), "content": str(content)})
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError(f"{where}: no assistant message in field '{field}'")
    response = msgs[last]["content"]
    if not response.strip():
        raise DataError(f"{where}: empty response field '{field}[{last}].content'")
    context = msgs[:last]
    if not any(m["content"].strip() for m in context):
        raise DataError(f"{where}: empty prompt field '{field}' (no message before the last "
                        "assistant message)")
    prompt = "".join(f"{m['role']}: {m['content']}\n" for m in context) + "assistant:\n"
    return Example(sid, prompt, response, row, messages=context)


def _template(row, cfg, where, sid) -> Example:
    parts = []
    for kind, option in (("prompt", "prompt_template"), ("response", "response_template")):
        template = getattr(cfg, option)
        if not template:
            raise DataError(f"data.format == 'template' needs data.{option}")
        try:
            text = template.format_map(row)
        except KeyError as err:
            raise DataError(f"{where}: data.{option} uses field '{_shown(err.args[0])}', which "
                            f"the row lacks (fields: {', '.join(sorted(map(_shown, row)))})"
                            ) from None
        except (ValueError, IndexError, AttributeError) as err:
            raise DataError(f"{where}: data.{option} {template!r} is not a usable format "
                            f"string ({err})") from None
        if not text.strip():
            raise DataError(f"{where}: empty {kind} from data.{option}")
        parts.append(text)
    return Example(sid, parts[0], parts[1], row)


_FORMATTERS = {"alpaca": _alpaca, "prompt_completion": _prompt_completion,
               "messages": _messages, "template": _template}


# ----------------------------------------------------------------------------- tokenization

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


# ----------------------------------------------------------------------------- output

def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_jsonl_atomic(rows: list[dict], path) -> None:
    """Write JSON Lines (UTF-8) to a temp file in the same folder, then rename over ``path``:
    readers never see a half-written file, and a crash leaves the old file intact."""
    path = Path(path)
    # The temp name ends in the writer's pid, as runfolder.write_atomic's does, so that a run
    # folder can tell the leftovers of a killed writer from a live one's.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # A failed write (a full disk) names no file by itself.
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
