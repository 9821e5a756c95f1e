"""Stages train-small and train-target: LoRA fine-tuning of a model on the full data
(Algorithm 1, line 2; the baselines fine-tune the target)."""

from __future__ import annotations

from dataclasses import asdict

from ..runs.folder import fingerprint, write_dir_atomic, write_json
from ..runs.layout import SCRATCH, adapter_dir, history_file
from .base import Stage, tune_options
from .context import RunContext


class Train(Stage):
    def __init__(self, role: str):
        self.role = role  # "small" or "target"
        self.name = f"train-{role}"
        self.outputs = (adapter_dir(role), history_file(role))

    def fingerprint(self, ctx: RunContext, fps: dict[str, str]) -> str:
        return fingerprint(ctx.data_fingerprint, asdict(getattr(ctx.cfg, self.role)),
                           *tune_options(ctx))

    def run(self, ctx: RunContext) -> dict:
        from ..training.lora import check_finite_losses, finetune_lora
        from ..models.adapters import attach_lora
        from ..models.loading import load_model
        from ..training.losses import named_errors

        c, role, model_cfg = ctx.cfg, self.role, getattr(ctx.cfg, self.role)
        data = ctx.tokenized(role)
        model = attach_lora(load_model(model_cfg, ctx.device), c.lora, ctx.stage1_seed)
        with named_errors(f"fine-tuning the {role} model {model_cfg.name}"):
            history = finetune_lora(model, data, ctx.tokenizer(role).pad_token_id, c.finetune,
                                    ctx.stage1_seed, ctx.run / SCRATCH[self.name],
                                    accelerator=ctx.accelerator,
                                    checkpoint_every=c.finetune.checkpoint_every,
                                    show_progress=ctx.progress)
        check_finite_losses(history["loss"], f"the {role} model {model_cfg.name}")
        if ctx.is_main:
            write_dir_atomic(ctx.run / adapter_dir(role),
                             lambda d: model.save_pretrained(d, save_embedding_layers=False))
            write_json(ctx.run / history_file(role), history)
        ctx.tuned[role] = model
        return {"final_loss": history["loss"][-1] if history["loss"] else None,
                "seconds_before_resume": round(history["seconds_before_resume"], 3)}
