"""Stages score and score-target: effort, loss and EL2N of every sample (Algorithm 1, line 3),
on the fine-tuned small model (or, for the ablation ``speculative: untuned-target``, the
untuned target), and for the baselines on the fine-tuned target, with its embeddings (D2)."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
import pandas as pd

from ..runs.folder import fingerprint, write_atomic, write_table
from ..runs.layout import SCORES, SCRATCH, TARGET_EMBEDDINGS, TARGET_SCORES, adapter_dir
from .base import Stage, scoring_options
from .context import RunContext


class Score(Stage):
    name = "score"
    inputs = (adapter_dir("small"),)  # read only when the run has train-small
    outputs = (SCORES,)

    def fingerprint(self, ctx: RunContext, fps: dict[str, str]) -> str:
        c = ctx.cfg
        if c.selection.speculative == "untuned-target":
            return fingerprint(ctx.data_fingerprint, "untuned", asdict(c.target), asdict(c.lora),
                               scoring_options(ctx), ctx.stage1_seed)
        return fingerprint(fps["train-small"], scoring_options(ctx))

    def scratch_fingerprint(self, ctx: RunContext, fp: str) -> str:
        # Shards are read back by position: another size would leave samples unscored.
        return fingerprint(fp, ctx.cfg.scoring.shard_size)

    def run(self, ctx: RunContext) -> dict:
        if ctx.cfg.selection.speculative == "untuned-target":
            return self.score(ctx, "target", tuned=False)
        return self.score(ctx, "small", tuned=True)

    def score(self, ctx: RunContext, role: str, tuned: bool, embeddings: bool = False) -> dict:
        """Effort, loss and EL2N of every sample on the ``role`` model, fine-tuned (its saved
        adapter) or untuned (a fresh adapter), into ``outputs``."""
        from ..models.adapters import attach_lora, load_adapter
        from ..models.loading import load_model
        from ..scoring.engine import score_samples
        from ..training.losses import named_errors

        c, model_cfg = ctx.cfg, getattr(ctx.cfg, role)
        data = ctx.tokenized(role)
        model = ctx.tuned.pop(role, None) if tuned else None
        if model is None:
            base = load_model(model_cfg, ctx.device)
            model = (load_adapter(base, ctx.run / adapter_dir(role)) if tuned
                     else attach_lora(base, c.lora, ctx.stage1_seed, dropout=0.0))
        what = f"the {'fine-tuned' if tuned else 'untuned'} {role} model {model_cfg.name}"
        with named_errors(f"scoring on {what}"):
            table = score_samples(model, data, ctx.tokenizer(role).pad_token_id,
                                  batch_size=c.scoring.batch_size, scope=c.scoring.scope,
                                  device=ctx.device, shard_dir=ctx.run / SCRATCH[self.name],
                                  shard_size=c.scoring.shard_size, embeddings=embeddings,
                                  desc=f"effort ({role})", accelerator=ctx.accelerator,
                                  show_progress=ctx.progress)
        if ctx.is_main:
            frame = pd.DataFrame({"id": table.ids, "effort": table.effort, "loss": table.loss,
                                  "el2n": table.el2n, "n_response_tokens": table.n_tokens})
            write_table(ctx.run / self.outputs[0], frame)
            if embeddings:
                buffer = io.BytesIO()
                np.save(buffer, table.embeddings.astype(np.float32))
                write_atomic(ctx.run / self.outputs[1], buffer.getvalue())
        return {"samples": len(table.ids)}


class ScoreTarget(Score):
    """The baselines' scores: on the fine-tuned target, whatever the method (several
    baselines in one folder share it, as they share the fine-tuned target in the paper)."""

    name = "score-target"
    inputs = (adapter_dir("target"),)
    outputs = (TARGET_SCORES, TARGET_EMBEDDINGS)

    def fingerprint(self, ctx: RunContext, fps: dict[str, str]) -> str:
        return fingerprint(fps["train-target"], scoring_options(ctx))

    def run(self, ctx: RunContext) -> dict:
        return self.score(ctx, "target", tuned=True, embeddings=True)
