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
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from staff.models.gguf_cache import save_as_folder   # what the model cache does too

    save_as_folder(Path(gguf), Path(out))
    print(f"{gguf} -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
