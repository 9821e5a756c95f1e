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


def cache_folder(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives: one folder per file version and reader."""
    import transformers

    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}|"
                         f"{transformers.__version__}".encode()).hexdigest()[:16]
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
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def drop_quantization_marker(model) -> None:
    """GGUF weights are de-quantised on load; the quantization marker transformers leaves on
    the model would only block saving it (and adapters on it)."""
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
