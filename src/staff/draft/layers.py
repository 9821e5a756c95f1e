"""Which decoder layers a draft keeps, and removing the others.

A layer whose output is nearly its input (the residual stream passes through almost unchanged)
does little, so it goes first: the "block influence" of ShortGPT (Men et al., 2024),
1 - cos(input, output) averaged over the real tokens of the task's prompts.
"""

from __future__ import annotations

import numpy as np
import torch


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of decoder layers of a Hugging Face causal LM (Llama, Gemma, Qwen, ...)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: no decoder layer stack (model.layers) found; "
                         "`staff draft` supports decoder-only models with one.")
    return layers


@torch.no_grad()
def block_influence(model, batches) -> np.ndarray:
    """Per layer, 1 - mean cosine(input, output) over the non-padding tokens of ``batches``
    (dicts with input_ids and attention_mask). Low: the layer barely changes its input."""
    layers = decoder_layers(model)
    totals = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    inputs: dict[int, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def before(index):
        def hook(module, args, kwargs):
            inputs[index] = args[0] if args else kwargs["hidden_states"]
        return hook

    def after(index):
        def hook(module, args, kwargs, output):
            out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(inputs.pop(index).float(), out.float(),
                                                        dim=-1)
            totals[index] += (1.0 - cos)[mask[0]].double().sum().cpu()
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(after(i), with_kwargs=True))
    try:
        for batch in batches:
            mask[:] = [batch["attention_mask"].bool()]
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  use_cache=False)
            count += int(mask[0].sum())
    finally:
        for handle in handles:
            handle.remove()
    return (totals / max(count, 1)).numpy()


def layers_to_keep(influence: np.ndarray, keep: int) -> list[int]:
    """The ``keep`` most influential layers, in their original order."""
    if not 1 <= keep <= len(influence):
        raise ValueError(f"draft.keep_layers == {keep}, must be between 1 and the target's "
                         f"{len(influence)} decoder layers.")
    order = np.argsort(-influence, kind="stable")
    return sorted(int(i) for i in order[:keep])


def drop_layers(model, keep: list[int]) -> None:
    """Keep only the decoder layers ``keep`` (in place), with the config and each layer's
    index updated so that the model saves, reloads and caches keys/values correctly."""
    layers = decoder_layers(model)
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # the slot of the layer in the generation cache
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    decoder.layers = kept
    configs = {id(model.config): model.config}
    text = getattr(model.config, "text_config", None)
    if text is not None:
        configs[id(text)] = text
    for config in configs.values():
        if getattr(config, "num_hidden_layers", None) == len(layers):
            config.num_hidden_layers = len(keep)
        types = getattr(config, "layer_types", None)
        if types is not None and len(types) == len(layers):
            config.layer_types = [types[i] for i in keep]  # e.g. Gemma's sliding/full pattern
