"""LoRA adapters on a loaded model: a fresh one (seeded), a saved one (checked against the
model), and the check, before any work, that ``lora.target_modules`` are modules of the model.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from ..config import LoraConfig, ModelConfig
from .loading import ModelError, resolve_source


def check_lora_targets(cfg: ModelConfig, lora: LoraConfig) -> None:
    """Fail before any work if ``lora.target_modules`` names no module of the model: PEFT would
    say so only when the adapter is attached, after the stages before it ran. The model is
    built on the meta device (no weights read, no memory)."""
    modules = lora.target_modules
    if modules == "all-linear" or isinstance(modules, str):  # a string is a regex for PEFT
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    source, extra = resolve_source(cfg.name)
    try:
        config = AutoConfig.from_pretrained(source, revision=cfg.revision, **extra)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - cannot tell here; loading the model will say why
        return
    names = {name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules()
             if isinstance(module, torch.nn.Linear)}
    unknown = [m for m in modules if m not in names and not any(
        n == m or n.endswith("." + m) for n, _ in skeleton.named_modules())]
    if unknown:
        raise ModelError(f"lora.target_modules has {unknown[0]!r}, which is no module of "
                         f"{cfg.name}; its linear layers: {', '.join(sorted(names))}.")


def attach_lora(model, cfg: LoraConfig, seed: int, dropout: float | None = None):
    """A fresh LoRA adapter (B = 0, so the model's function is unchanged), seeded."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(seed)  # PEFT draws lora_A from the global generator
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout if dropout is None else dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    with _no_peft_deprecation():
        return get_peft_model(model, peft_cfg)


@contextlib.contextmanager
def _no_peft_deprecation():
    """PEFT reads transformers' deprecated ``is_gradient_checkpointing`` whenever it wraps a
    model, and transformers warns (FutureWarning) each time: twice a run, 67 times in the
    tests, about code that is neither ours nor the user's. Silenced where PEFT wraps a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def load_adapter(model, adapter_dir: str | Path, trainable: bool = True):
    """Wrap ``model`` with a saved adapter; a clear error if it does not fit the model.

    PEFT only warns when the adapter has weights for modules the model lacks (an adapter of a
    deeper model) or lacks some the model has; both mean another architecture, so both are
    errors here, as is a shape mismatch."""
    from peft import PeftModel, get_peft_model_state_dict

    adapter_dir = Path(adapter_dir)
    try:
        with warnings.catch_warnings(), _no_peft_deprecation():
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"adapter {adapter_dir} does not fit the base model: {_reason(err)}")
    weights = adapter_dir / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            saved = {k for k in fh.keys() if "lora_" in k}
        expected = {k for k in get_peft_model_state_dict(peft_model, save_embedding_layers=False)
                    if "lora_" in k}
        extra, missing = sorted(saved - expected), sorted(expected - saved)
        if extra or missing:
            what = (f"it has {len(extra)} tensor(s) the model has no place for, e.g. {extra[0]}"
                    if extra else f"it lacks {len(missing)} tensor(s) of the model's LoRA "
                                  f"layers, e.g. {missing[0]}")
            raise ModelError(f"adapter {adapter_dir} does not fit the base model: {what}; it "
                             "was trained on another architecture.")
    return peft_model


def _reason(err: Exception) -> str:
    """The informative line of a loading error (torch puts a bare header line first)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "size mismatch" in line),
                lines[0] if lines else type(err).__name__)
