"""LoRA fine-tuning options that change how it runs, not what it computes."""

from __future__ import annotations

import torch

from dist_worker import samples
from staff.config import FinetuneConfig, LoraConfig, ModelConfig
from staff.training.lora import finetune_lora
from staff.models.adapters import attach_lora
from staff.models.loading import load_model


def tuned(model_dir, tmp_path, **options):
    torch.manual_seed(0)
    model = attach_lora(load_model(ModelConfig(name=model_dir), torch.device("cpu")),
                        LoraConfig(r=4, alpha=8, dropout=0.1), seed=0)
    calls = []
    # Inside the checkpointed layer, so it runs again when the backward pass recomputes the
    # layer (forward hooks do not show that: torch skips them on the recompute).
    mlp = model.base_model.model.model.layers[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    cfg = FinetuneConfig(epochs=2, learning_rate=3e-3, batch_size=8, **options)
    history = finetune_lora(model, samples(), 0, cfg, seed=0, work_dir=tmp_path,
                            checkpoint_every=cfg.checkpoint_every, show_progress=False)
    history["layer_0_forwards"] = len(calls)
    return model, history


def test_gradient_checkpointing_gives_the_same_adapter_and_is_off_afterwards(tiny_model_dir,
                                                                             tmp_path):
    plain, plain_history = tuned(tiny_model_dir, tmp_path / "a")
    recomputed, history = tuned(tiny_model_dir, tmp_path / "b", gradient_checkpointing=True)
    # LoRA dropout is on: the recomputation must replay the same masks.
    assert len(history["loss"]) == len(plain_history["loss"]) == 10
    # It did recompute: every layer runs forward twice per step.
    assert history["layer_0_forwards"] == 2 * plain_history["layer_0_forwards"] == 20
    torch.testing.assert_close(torch.tensor(history["loss"]), torch.tensor(plain_history["loss"]))
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        if "lora_" in name:
            torch.testing.assert_close(a, b, msg=name)
    # Off again: the scoring stage runs on this model next, one forward per sample.
    base = recomputed.base_model.model
    assert not getattr(base, "is_activation_checkpointing", None) and not any(
        getattr(m, "gradient_checkpointing", False) for m in base.modules())


def test_a_resumed_run_counts_the_time_of_the_steps_it_kept(tiny_model_dir, tmp_path,
                                                           monkeypatch):
    """Table 2 reports stage times: after a kill, the time before it must not vanish, and the
    steps redone after the last checkpoint must not count twice."""
    import json

    import pytest

    import staff.training.lora as lora

    save = lora._save_checkpoint
    saves = []

    def killed_after_third_save(*args):
        save(*args)
        saves.append(1)
        if len(saves) == 3:
            raise KeyboardInterrupt  # stands in for a kill right after a checkpoint

    monkeypatch.setattr(lora, "_save_checkpoint", killed_after_third_save)
    with pytest.raises(KeyboardInterrupt):
        tuned(tiny_model_dir, tmp_path, checkpoint_every=1)
    monkeypatch.setattr(lora, "_save_checkpoint", save)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and state["history"]["seconds"] > 0
    # Pretend the first process was slow, so that the sum is told apart from a fresh count.
    state["history"]["seconds"] = 1000.0
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps(state))

    _, history = tuned(tiny_model_dir, tmp_path, checkpoint_every=1)
    assert history["seconds_before_resume"] == 1000.0
    assert 1000.0 < history["seconds"] < 1000.0 + 600
    assert len(history["loss"]) == 10

    _, fresh = tuned(tiny_model_dir, tmp_path / "fresh")
    assert fresh["seconds_before_resume"] == 0.0 and 0 < fresh["seconds"] < 600
    torch.testing.assert_close(torch.tensor(history["loss"]), torch.tensor(fresh["loss"]))


class StopAt:
    """A stop check that says stop at its ``n``-th call, and counts its calls."""

    every = 0.4  # epochs: 2 of the 5 steps an epoch has here

    def __init__(self, n: int):
        self.n, self.steps = n, []

    def __call__(self, model, step, history):
        assert not model.training  # it may score: then the model is back in training mode
        self.steps.append(step)
        return len(self.steps) >= self.n


def test_a_stop_check_ends_training_at_its_step_and_a_resumed_run_stays_stopped(
        tiny_model_dir, tmp_path, monkeypatch):
    import staff.training.lora as lora

    calls = StopAt(2)
    monkeypatch.setattr(lora, "_check_says_stop",
                        _spy_mode(lora._check_says_stop))
    model = attach_lora(load_model(ModelConfig(name=tiny_model_dir), torch.device("cpu")),
                        LoraConfig(r=4, alpha=8, dropout=0.1), seed=0)
    cfg = FinetuneConfig(epochs=2, learning_rate=3e-3, batch_size=8)
    history = finetune_lora(model, samples(), 0, cfg, seed=0, work_dir=tmp_path,
                            show_progress=False, stop_check=calls)
    assert calls.steps == [2, 4]
    assert history["steps"] == history["stopped_early_at"] == 4 and len(history["loss"]) == 4
    # Run again on the same work folder (a restart after the stop): no more steps, no check.
    again = StopAt(99)
    history = finetune_lora(model, samples(), 0, cfg, seed=0, work_dir=tmp_path,
                            show_progress=False, stop_check=again)
    assert again.steps == [] and history["steps"] == 4 and len(history["loss"]) == 4


def _spy_mode(check_says_stop):
    """Put the model in eval mode before the check, as scoring does, to see that training
    mode comes back."""
    def spied(stop_check, accelerator, model, params, cfg, step, history):
        accelerator.unwrap_model(model).eval()
        return check_says_stop(stop_check, accelerator, model, params, cfg, step, history)
    return spied


def test_the_settled_effort_check_scores_without_changing_the_training(tiny_model_dir,
                                                                        tmp_path):
    """A check that never stops must leave the adapter exactly as training without it:
    scoring in between (eval mode, its own requires_grad) must not disturb the steps."""
    from staff.config import EarlyStopConfig, ScoringConfig
    from staff.stages.train import PROBE_EFFORT, SETTLE, SettledEffort

    def train(stop_check, folder):
        model = attach_lora(load_model(ModelConfig(name=tiny_model_dir), torch.device("cpu")),
                            LoraConfig(r=4, alpha=8, dropout=0.1), seed=0)
        torch.manual_seed(0)
        cfg = FinetuneConfig(epochs=2, learning_rate=3e-3, batch_size=8)
        history = finetune_lora(model, samples(), 0, cfg, seed=0, work_dir=folder,
                                show_progress=False, stop_check=stop_check)
        return model, history

    class NeverStop(SettledEffort):
        def __call__(self, *args):
            super().__call__(*args)
            return False

    plain, plain_history = train(None, tmp_path / "a")
    check = NeverStop(samples(), 0, EarlyStopConfig(rho=0.5, every=0.4, probe=16),
                      ScoringConfig(), seed=0, device=torch.device("cpu"))
    checked, history = train(check, tmp_path / "b")
    assert len(check.probe) == 16
    assert [c["step"] for c in history[SETTLE]] == [2, 4, 6, 8]  # not at the last step
    assert history[SETTLE][0]["rho"] is None
    assert all(-1 <= c["rho"] <= 1 for c in history[SETTLE][1:])
    assert len(history[PROBE_EFFORT]) == 16 and "stopped_early_at" not in history
    torch.testing.assert_close(torch.tensor(history["loss"]), torch.tensor(plain_history["loss"]))
    for (name, a), b in zip(plain.named_parameters(), checked.parameters()):
        if "lora_" in name:
            torch.testing.assert_close(a, b, msg=name)

    # The same check deciding: on this tiny model the probe's ranks barely move between
    # checks (rho ~ 1), so it stops at the first comparison.
    check = SettledEffort(samples(), 0, EarlyStopConfig(rho=0.5, every=0.4, probe=16),
                          ScoringConfig(), seed=0, device=torch.device("cpu"))
    _, history = train(check, tmp_path / "c")
    assert history["stopped_early_at"] == 4 and history[SETTLE][1]["rho"] >= 0.5
