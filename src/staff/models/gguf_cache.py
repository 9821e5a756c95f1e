"""GGUF models, de-quantised once into a plain Hugging Face folder and loaded from there.

transformers reads a ``.gguf`` file by parsing all of its metadata and de-quantising every
tensor in Python, for the tokenizer and again for the model: measured here, 14 s + 45 s for
SmolLM2-135M and 50 s + 94 s for Gemma-3-270M on a busy 2-core machine, against 1.4 s and 7 s
from the same weights saved as a folder. A run loads each model several times (the up-front
checks, each stage, each benchmark cell), so the offline demo models and any ``.gguf`` path are
converted on first use into a cache folder, and every later load reads the folder.

The folder holds exactly what loading the GGUF gives: the de-quantised fp32 weights, the
config, and the tokenizer with its chat template, so results are the same. It is keyed by the
file (absolute path, size, modification time) and the transformers version (its GGUF reader
does the de-quantising), written aside and renamed into place (never half-written), and
converted by one process at a time (a file lock). ``STAFF_CACHE`` moves the cache (default
``$XDG_CACHE_HOME/staff-coreset`` or ``~/.cache/staff-coreset``); ``STAFF_GGUF_CACHE=0`` turns
it off (every load reads the GGUF).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def cache_root() -> Path:
    if os.environ.get("STAFF_CACHE"):
        return Path(os.environ["STAFF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "staff-coreset"


def enabled() -> bool:
    return os.environ.get("STAFF_GGUF_CACHE", "1").lower() not in ("0", "false", "no", "off")


# Bumped when save_as_folder writes something else from the same file and reader, so that no
# folder converted the old way is read again. 2: special tokens from the file's metadata (a
# folder converted before it under transformers 5.17 would keep the wrong eos token).
CONVERSION = 2


def cache_folder(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives: one folder per file version and reader."""
    import transformers

    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|"
                         f"{transformers.__version__}|{CONVERSION}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def converted(gguf: Path, name: str, convert: Callable[[Path, Path], None] | None = None) -> Path:
    """The cache folder of ``gguf``, converting it first if needed. ``convert(gguf, folder)``
    writes the folder (default: load with transformers and save); ``name`` is what messages
    call the model."""
    from filelock import FileLock

    folder = cache_folder(gguf)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "config.json").is_file():   # another process converted it meanwhile
            return folder
        log.info("%s: converting the GGUF once into %s (later runs load it in seconds)",
                 name, folder)
        scratch = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            (convert or save_as_folder)(gguf, scratch)
            os.replace(scratch, folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return folder


def save_as_folder(gguf: Path, out: Path) -> None:
    """Load ``gguf`` with transformers (de-quantised, fp32) and save model and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    drop_quantization_marker(model)
    restore_special_tokens(tokenizer, gguf, model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# The special tokens as the GGUF file names them (llama.cpp's keys).
GGUF_SPECIAL_TOKENS = {"bos_token": "tokenizer.ggml.bos_token_id",
                       "eos_token": "tokenizer.ggml.eos_token_id",
                       "pad_token": "tokenizer.ggml.padding_token_id",
                       "unk_token": "tokenizer.ggml.unknown_token_id"}


def gguf_special_token_ids(gguf: Path) -> dict[str, int]:
    """The special token ids ``gguf``'s metadata declares, by tokenizer attribute."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    return {role: int(fields[key].parts[fields[key].data[0]][0])
            for role, key in GGUF_SPECIAL_TOKENS.items() if key in fields}


def restore_special_tokens(tokenizer, gguf: Path, model=None) -> dict[str, str]:
    """Set the tokenizer's (and the model's) special tokens to the ids the GGUF file declares;
    returns those changed. Some transformers versions' GGUF reader mislabels them: 5.17 reads
    SmolLM2's eos as <|im_start|> (id 1) where the file says <|im_end|> (2), so every response
    ends in the wrong token -- measured on a GPU run (2026-12-04), one token's NLL (+0.29) on
    every DialogSum held-out loss. The file is the authority, whatever the reader."""
    changed = {}
    for role, token_id in gguf_special_token_ids(gguf).items():
        if not 0 <= token_id < len(tokenizer) or getattr(tokenizer, f"{role}_id") == token_id:
            continue
        changed[role] = tokenizer.convert_ids_to_tokens(token_id)
        setattr(tokenizer, role, changed[role])
        if model is not None and role != "unk_token":
            key = f"{role}_id"
            setattr(model.config, key, token_id)
            if getattr(model, "generation_config", None) is not None:
                setattr(model.generation_config, key, token_id)
    if changed:
        log.warning("%s: special tokens set from the file's metadata: %s", gguf.name,
                    ", ".join(f"{k}={v!r}" for k, v in changed.items()))
    return changed


def drop_quantization_marker(model) -> None:
    """GGUF weights are de-quantised on load; the quantization marker transformers leaves on
    the model would only block saving it (and adapters on it)."""
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
