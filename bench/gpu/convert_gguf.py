"""Write a GGUF model as a plain Hugging Face folder (fp32 safetensors + tokenizer).

Loading SmolLM2 from its GGUF de-quantises every tensor (~17 s here); a benchmark loads the
model many times (each selection's stages, each verification). The folder holds exactly the
de-quantised weights, so it is the same model, loaded in about a second.

    python bench/gpu/convert_gguf.py MODEL.gguf OUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(gguf: str, out: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model.config.quantization_config = None   # de-quantised on load; the marker blocks saving
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"{gguf} -> {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main(*sys.argv[1:3])
