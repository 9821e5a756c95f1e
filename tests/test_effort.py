"""The batched effort scores equal a one-sample-at-a-time loop of ordinary .grad norms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from staff.config import LoraConfig, ModelConfig
from staff.models.adapters import attach_lora
from staff.models.loading import load_model
from staff.scoring.engine import lora_linears, score_samples, set_trainable
from staff.training.batching import collate


@dataclass
class Sample:
    id: str
    input_ids: list
    labels: list


def make_samples(n=12, seed=0, vocab=300):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p, r = int(rng.integers(1, 15)), int(rng.integers(1, 12))  # mixed lengths -> padding
        ids = rng.integers(4, vocab, p + r).tolist()
        out.append(Sample(f"x{i}", ids, [-100] * p + ids[p:]))
    return out


def lora_model(folder, seed=0, trained=True):
    model = load_model(ModelConfig(name=folder), torch.device("cpu"))
    model = attach_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0), seed=seed)
    if trained:  # make lora_B non-zero so that lora_A gets a gradient too
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def loop_norms(model, samples, scope):
    modules = lora_linears(model, scope)
    set_trainable(model, modules)
    params = [p for _, m in modules for p in m.parameters()]
    norms = []
    for s in samples:
        model.zero_grad(set_to_none=True)
        # Hugging Face's own loss on one unpadded sample: mean over its response tokens.
        out = model(input_ids=torch.tensor([s.input_ids]), labels=torch.tensor([s.labels]))
        out.loss.backward()
        norms.append(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)).item())
    return np.array(norms)


@pytest.mark.parametrize("scope", ["all", "last-layer"])
def test_batched_effort_equals_one_sample_loop(tiny_model_dir, scope):
    model = lora_model(tiny_model_dir)
    samples = make_samples()
    batched = score_samples(model, samples, pad_id=0, batch_size=5, scope=scope, show_progress=False)
    reference = loop_norms(model, samples, scope)
    assert np.all(reference > 0)
    np.testing.assert_allclose(batched.effort, reference, rtol=1e-4)


def test_scores_do_not_depend_on_batch_size_or_order(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    samples = make_samples(n=10)
    a = score_samples(model, samples, pad_id=0, batch_size=1, show_progress=False)
    b = score_samples(model, samples[::-1], pad_id=0, batch_size=7, show_progress=False)
    for name in ("effort", "loss", "el2n"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name)[::-1], rtol=1e-4)


def test_loss_and_el2n_match_plain_model_output(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    samples = make_samples(n=4)
    table = score_samples(model, samples, pad_id=0, batch_size=4, show_progress=False)
    for i, s in enumerate(samples):
        batch = collate([s], pad_id=0)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
        target = torch.tensor(s.labels[1:])
        keep = target != -100
        loss = torch.nn.functional.cross_entropy(logits[keep], target[keep])
        probs = logits[keep].softmax(-1)
        el2n = (probs - torch.nn.functional.one_hot(target[keep], probs.shape[-1])).norm(dim=-1).mean()
        assert table.loss[i] == pytest.approx(loss.item(), rel=1e-4)
        assert table.el2n[i] == pytest.approx(el2n.item(), rel=1e-4)


def test_fresh_lora_target_has_gradient_only_through_lora_B(tiny_model_dir):
    # A fresh adapter has B = 0: lora_A gets no gradient, the effort comes from lora_B alone.
    model = lora_model(tiny_model_dir, trained=False)
    samples = make_samples(n=3)
    table = score_samples(model, samples, pad_id=0, show_progress=False)
    assert np.all(table.effort > 0)
    np.testing.assert_allclose(table.effort, loop_norms(model, samples, "all"), rtol=1e-4)


def test_shards_resume(tiny_model_dir, tmp_path):
    model = lora_model(tiny_model_dir)
    samples = make_samples(n=9)
    full = score_samples(model, samples, pad_id=0, batch_size=2, shard_dir=tmp_path, shard_size=4,
                         show_progress=False)
    shards = sorted(tmp_path.glob("shard-*.npz"))
    assert len(shards) == 3
    shards[1].unlink()  # as if killed while the second shard was being computed
    again = score_samples(model, samples, pad_id=0, batch_size=2, shard_dir=tmp_path, shard_size=4,
                          show_progress=False)
    np.testing.assert_array_equal(full.effort, again.effort)


def test_torn_shard_is_scored_again(tiny_model_dir, tmp_path):
    model = lora_model(tiny_model_dir)
    samples = make_samples(n=9)
    full = score_samples(model, samples, pad_id=0, batch_size=2, shard_dir=tmp_path, shard_size=4,
                         show_progress=False)
    shards = sorted(tmp_path.glob("shard-*.npz"))
    shards[1].write_bytes(shards[1].read_bytes()[:40])  # torn by a power loss
    again = score_samples(model, samples, pad_id=0, batch_size=2, shard_dir=tmp_path, shard_size=4,
                          show_progress=False)
    np.testing.assert_array_equal(full.effort, again.effort)
    assert not list(tmp_path.glob("*.tmp.npz"))
