"""`staff draft`: layer ranking, removal, distillation healing, resume, and the saved folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import build_tiny_model
from staff.config import DraftConfig, load_config
from staff.draft.heal import distill, distillation_loss
from staff.draft.layers import block_influence, drop_layers, layers_to_keep
from staff.training.batching import collate


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("six"), seed=3, layers=6))


def load(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


def batch(n=4, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 200, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def test_a_layer_that_passes_its_input_through_ranks_lowest_and_goes_first(six_layers):
    model = load(six_layers)
    with torch.no_grad():  # layer 2 adds nothing to the residual stream: output == input
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    influence = block_influence(model, [batch()])
    assert influence.shape == (6,)
    assert influence[2] == pytest.approx(0.0, abs=1e-6)
    assert (np.delete(influence, 2) > 1e-4).all()
    assert 2 not in layers_to_keep(influence, 5)
    assert layers_to_keep(influence, 3) == sorted(layers_to_keep(influence, 3))
    with pytest.raises(ValueError, match="keep_layers == 7"):
        layers_to_keep(influence, 7)


def test_dropped_model_saves_reloads_and_generates_like_in_memory(six_layers, tmp_path):
    model = load(six_layers)
    keep = [0, 2, 5]
    drop_layers(model, keep)
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    assert [l.self_attn.layer_idx for l in model.model.layers] == [0, 1, 2]
    b = batch()
    with torch.no_grad():
        logits = model(**b).logits
    model.save_pretrained(tmp_path / "d")
    again = load(tmp_path / "d")
    with torch.no_grad():
        torch.testing.assert_close(again(**b).logits, logits)
    # The generation cache has one slot per kept layer: cached decoding == full recompute.
    prompt = b["input_ids"][1:2, :6]
    out = again.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True)
    out_nocache = again.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(out, out_nocache)


def test_keeping_every_layer_changes_nothing(six_layers):
    model, reference = load(six_layers), load(six_layers)
    drop_layers(model, list(range(6)))
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(**b).logits, reference(**b).logits)


def test_distillation_loss_is_zero_for_equal_logits_and_ignores_padding():
    logits = torch.randn(2, 5, 11)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert distillation_loss(logits, logits, mask, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    other = logits.clone()
    other[0, 3:] += 5 * torch.randn(2, 11)  # differences only at padded positions
    assert distillation_loss(other, logits, mask, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.randn(2, 5, 11), logits, mask, 2.0).item() > 0


def tokens_for(path, n=40):
    from staff.data import tokenize_examples, to_examples
    from staff.config import DataConfig
    from transformers import AutoTokenizer

    rng = np.random.default_rng(0)
    rows = [{"prompt": "Add %d and %d." % tuple(rng.integers(1, 99, 2)),
             "completion": " dog cat park"[: rng.integers(4, 14)]} for _ in range(n)]
    cfg = DataConfig(path="x.jsonl", format="prompt_completion", cutoff_len=32)
    tok = AutoTokenizer.from_pretrained(path)
    return tokenize_examples(to_examples(rows, cfg), tok, cfg), tok.pad_token_id


def test_healing_brings_the_draft_towards_the_target(six_layers, tmp_path):
    teacher = load(six_layers)
    with torch.no_grad():  # a sharper teacher, so that there is something to learn
        teacher.lm_head.weight.mul_(20)
    student = load(six_layers)
    student.lm_head.weight.data.mul_(20)
    drop_layers(student, [0, 5])
    tokens, pad = tokens_for(six_layers)
    b = collate(tokens[:16], pad)
    inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}

    def kl():
        with torch.no_grad():
            return distillation_loss(student(**inputs).logits, teacher(**inputs).logits,
                                     b["attention_mask"], 1.0).item()

    before = kl()
    cfg = DraftConfig(heal_steps=30, batch_size=8, learning_rate=3e-3)
    history = distill(student, teacher, tokens, pad, cfg, seed=0, work_dir=tmp_path)
    assert len(history["loss"]) == 30
    assert kl() < 0.5 * before
    # the embeddings (shared with the target) are left alone
    torch.testing.assert_close(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight / 1)


def test_interrupted_healing_resumes_to_the_same_weights(six_layers, tmp_path, monkeypatch):
    import staff.draft.heal as heal

    tokens, pad = tokens_for(six_layers)
    cfg = DraftConfig(heal_steps=8, batch_size=8, learning_rate=1e-3, checkpoint_every=3)

    def run(work, stop_at=None):
        teacher, student = load(six_layers), load(six_layers)
        drop_layers(student, [1, 3])
        calls = {"n": 0}
        real = heal.distillation_loss

        def counting(*args):
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(heal, "distillation_loss", counting)
        torch.manual_seed(0)
        history = heal.distill(student, teacher, tokens, pad, cfg, seed=0, work_dir=work,
                               show_progress=False)
        return student, history

    straight, straight_history = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_at=5)  # after the checkpoint at step 3
    saved = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert saved["step"] == 3 and saved["history"]["seconds"] > 0
    resumed, history = run(tmp_path / "b")
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    # The time of the 3 kept steps counts; the interrupted process's lost step 4 does not.
    assert history["loss"] == straight_history["loss"]
    assert straight_history["seconds_before_resume"] == 0
    assert history["seconds_before_resume"] == saved["history"]["seconds"]
    assert history["seconds"] > saved["history"]["seconds"]


def test_staff_draft_cli_writes_a_model_folder_that_select_accepts(six_layers, tmp_path,
                                                                    alpaca_file):
    from typer.testing import CliRunner

    from staff.cli import app
    from staff.pipeline import Pipeline

    out = tmp_path / "draft"
    result = CliRunner().invoke(app, [
        "draft", "--data", str(alpaca_file), "--target", six_layers, "-o", str(out),
        "--keep-layers", "2", "--heal-steps", "4", "--set", "data.format=alpaca",
        "--set", "draft.held_out=8", "-q"])
    assert result.exit_code == 0, result.output
    assert "2 of 6 kept" in result.output
    record = json.loads((out / "draft.json").read_text())
    assert len(record["layers"]["kept"]) == 2 and len(record["block_influence"]) == 6
    assert record["heal_samples"] == 32 and len(record["heal"]["kl"]) == 4
    assert set(record["response_loss_held_out"]) == {"target", "pruned", "healed"}
    assert not list(tmp_path.glob(".draft*"))  # no work or temp folder left behind
    assert load(out).config.num_hidden_layers == 2
    cfg = load_config(None, [f"data.path={alpaca_file}", "data.format=alpaca",
                             f"small.name={out}", f"target.name={six_layers}",
                             f"output_dir={tmp_path / 'run'}", "finetune.epochs=1",
                             "selection.regions=4", "selection.verify_per_region=2",
                             "report.enabled=false", "lora.r=4"])
    run = Pipeline(cfg, show_progress=False).run_all()
    assert len(run.ids[0.9]) == 4


def test_bad_draft_options_are_one_line_errors(tmp_path, alpaca_file, six_layers):
    from typer.testing import CliRunner

    from staff.cli import app

    for option, message in (("draft.keep_fraction=1.5", "draft.keep_fraction == 1.5"),
                            ("draft.keep_layers=0", "draft.keep_layers == 0")):
        result = CliRunner().invoke(app, ["draft", "--data", str(alpaca_file), "--target",
                                          six_layers, "--set", option, "-q"])
        assert result.exit_code == 2 and message in result.output
    result = CliRunner().invoke(app, ["draft", "--data", str(alpaca_file), "--target",
                                      six_layers, "--keep-layers", "9", "--set",
                                      "data.format=alpaca", "-o", str(tmp_path / "d"), "-q",
                                      "--set", "draft.held_out=8"])
    assert result.exit_code == 2 and "keep_layers == 9" in result.output
    assert not list(tmp_path.glob("*d*"))  # neither the draft nor a work folder
    result = CliRunner().invoke(app, ["draft", "--data", str(alpaca_file), "--target",
                                      six_layers, "--set", "data.format=alpaca", "-q"])
    assert result.exit_code == 2 and "40 samples leave 0 for healing" in result.output
    assert not list(tmp_path.glob(".*work"))
