"""Stages train-small and train-target: LoRA fine-tuning of a model on the full data
(Algorithm 1, line 2; the baselines fine-tune the target).

With ``early_stop.rho`` > 0 the fine-tuning stops once the effort ranks have settled (issue 19,
docs/method.md): every ``early_stop.every`` epochs a fixed probe of samples is scored on the
model being trained, and training stops when Spearman's rho between two consecutive checks
reaches ``early_stop.rho``. Effort is what stage 1 is for; the loss need not have converged.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

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
        stop = asdict(ctx.cfg.early_stop)
        # Off (the default) leaves the fingerprint of runs made before the option unchanged.
        extra = (stop,) if ctx.cfg.early_stop.rho > 0 else ()
        return fingerprint(ctx.data_fingerprint, asdict(getattr(ctx.cfg, self.role)),
                           *tune_options(ctx), *extra)

    def run(self, ctx: RunContext) -> dict:
        from ..training.lora import check_finite_losses, finetune_lora
        from ..models.adapters import attach_lora
        from ..models.loading import load_model
        from ..training.losses import named_errors

        c, role, model_cfg = ctx.cfg, self.role, getattr(ctx.cfg, self.role)
        data = ctx.tokenized(role)
        model = attach_lora(load_model(model_cfg, ctx.device), c.lora, ctx.stage1_seed)
        pad_id = ctx.tokenizer(role).pad_token_id
        check = (SettledEffort(data, pad_id, c.early_stop, c.scoring, ctx.stage1_seed, ctx.device)
                 if c.early_stop.rho > 0 else None)
        with named_errors(f"fine-tuning the {role} model {model_cfg.name}"):
            history = finetune_lora(model, data, pad_id, c.finetune,
                                    ctx.stage1_seed, ctx.run / SCRATCH[self.name],
                                    accelerator=ctx.accelerator,
                                    checkpoint_every=c.finetune.checkpoint_every,
                                    show_progress=ctx.progress, stop_check=check)
        check_finite_losses(history["loss"], f"the {role} model {model_cfg.name}")
        if ctx.is_main:
            write_dir_atomic(ctx.run / adapter_dir(role),
                             lambda d: model.save_pretrained(d, save_embedding_layers=False))
            write_json(ctx.run / history_file(role), history)
        ctx.tuned[role] = model
        result = {"final_loss": history["loss"][-1] if history["loss"] else None,
                  "seconds_before_resume": round(history["seconds_before_resume"], 3)}
        if check is not None:
            result["steps"] = history["steps"]
            result["stopped_early_at"] = history.get("stopped_early_at")
            result["settle_rho"] = [chk["rho"] for chk in history.get(SETTLE, [])]
        return result


SETTLE = "settle"  # the history's list of checks: {"step", "rho"} (rho None at the first)
PROBE_EFFORT = "settle_probe_effort"  # the probe's effort at the last check


class SettledEffort:
    """The early-stop check: the effort of a fixed probe on the model being trained, against
    the previous check's (Spearman's rho); stop when rho >= ``cfg.rho``. Its state lives in
    the fine-tuning history, so an interrupted run resumes it."""

    def __init__(self, examples: list, pad_id: int, cfg, scoring, seed: int, device):
        n = min(cfg.probe, len(examples))
        rng = np.random.default_rng([seed, 19])  # a probe of its own, whatever else draws
        self.probe = [examples[i] for i in np.sort(rng.choice(len(examples), n, replace=False))]
        self.pad_id, self.cfg, self.scoring, self.device = pad_id, cfg, scoring, device
        self.every = cfg.every

    def __call__(self, model, step: int, history: dict) -> bool:
        from scipy.stats import spearmanr

        from ..scoring.engine import score_samples

        table = score_samples(model, self.probe, self.pad_id, batch_size=self.scoring.batch_size,
                              scope=self.scoring.scope, device=self.device, show_progress=False)
        previous = history.get(PROBE_EFFORT)
        rho = (None if previous is None
               else float(spearmanr(previous, table.effort).statistic))
        history.setdefault(SETTLE, []).append({"step": step, "rho": rho})
        history[PROBE_EFFORT] = [float(x) for x in table.effort]
        return rho is not None and rho >= self.cfg.rho
