"""Run under `accelerate launch` by tests/test_distributed.py: score (and fine-tune) a tiny
model with however many processes were launched, and write the results from the main process."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator

from staff.config import FinetuneConfig, LoraConfig, ModelConfig
from staff.training.lora import finetune_lora
from staff.models.adapters import attach_lora
from staff.models.loading import load_model
from staff.scoring.engine import score_samples


@dataclass
class Sample:
    id: str
    input_ids: list
    labels: list


def samples(n=40, seed=0, vocab=300):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p, r = int(rng.integers(2, 12)), int(rng.integers(2, 10))
        ids = rng.integers(4, vocab, p + r).tolist()
        out.append(Sample(f"x{i}", ids, [-100] * p + ids[p:]))
    return out


def main(model_dir: str, out_dir: str, mode: str, batch_size: int) -> None:
    accelerator = Accelerator(cpu=True)
    data = samples()
    model = attach_lora(load_model(ModelConfig(name=model_dir), accelerator.device),
                        LoraConfig(r=4, alpha=8, dropout=0.0), seed=0)
    if mode == "score":
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        table = score_samples(model, data, 0, batch_size=4, shard_dir=f"{out_dir}/shards",
                              shard_size=8, show_progress=False, accelerator=accelerator)
        result = {"ids": table.ids, "effort": table.effort.tolist(), "loss": table.loss.tolist(),
                  "world": accelerator.num_processes}
    else:
        cfg = FinetuneConfig(epochs=3, learning_rate=3e-3, batch_size=batch_size, warmup_ratio=0.0)
        history = finetune_lora(model, data, 0, cfg, seed=0, work_dir=f"{out_dir}/ft",
                                accelerator=accelerator, show_progress=False)
        result = {"loss": history["loss"], "world": accelerator.num_processes}
    if accelerator.is_main_process:
        with open(f"{out_dir}/result.json", "w") as fh:
            json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
