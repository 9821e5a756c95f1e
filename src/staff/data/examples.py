"""Rows -> (prompt, response) examples with stable ids.

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
tokenizer's chat template instead; see ``formatting.tokenize_examples``.

Rows are counted from 1 everywhere: "row 1" is the first row (in a JSON Lines file without
blank lines, line 1), messages about a file's syntax name its 1-based line, and a row without an
id gets its row number as id ("1" for the first row), so an error, an id and the row a user
opens in an editor agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from staff.config import DataConfig
from staff.data.sources import DataError

log = logging.getLogger(__name__)

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
