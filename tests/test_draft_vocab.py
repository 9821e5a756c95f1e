"""A draft with the task's vocabulary (issue 19): the cut tokenizer splits the task's text as
before, the cut model's logits are the full model's at the kept ids, and `staff draft
--set draft.task_vocabulary=true` writes a folder that `staff select` accepts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import build_tiny_model
from staff.draft.vocab import (TaskVocabulary, VocabularyError, check_same_split, remap_examples,
                               shrink_model, shrink_tokenizer, task_vocabulary)

TASK = ["a dog runs in the park", "ein Hund rennt im Park", "the cat is in the park",
        "Translate English to German."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("vocab"), seed=5, layers=2))


def test_the_cut_tokenizer_splits_the_task_text_as_before_into_fewer_ids(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    ids = [tok(t)["input_ids"] for t in TASK]
    vocab, spec = task_vocabulary(tok, ids)
    assert vocab.size < len(tok) and vocab.size >= len({i for x in ids for i in x})
    small = shrink_tokenizer(tok, spec)
    assert len(small) == vocab.size
    for text, old in zip(TASK, ids):
        assert small(text)["input_ids"] == vocab.map(old).tolist()
        assert small.decode(small(text)["input_ids"]) == tok.decode(old)
    # Special tokens keep their meaning; any other text still encodes (the byte alphabet).
    assert small.eos_token == tok.eos_token
    assert small.eos_token_id == vocab.old_to_new[tok.eos_token_id]
    unseen = small("Zebra 987 quux!")["input_ids"]
    assert small.decode(unseen) == "Zebra 987 quux!" and small.unk_token_id not in unseen
    with pytest.raises(VocabularyError, match="not in the task vocabulary"):
        vocab.map([i for i in range(len(tok)) if vocab.old_to_new[i] < 0][:1])


def test_the_cut_models_logits_are_the_full_models_at_the_kept_ids(tiny, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny)
    ids = [tok(t)["input_ids"] for t in TASK]
    vocab, spec = task_vocabulary(tok, ids)
    full = AutoModelForCausalLM.from_pretrained(tiny).eval()
    cut = AutoModelForCausalLM.from_pretrained(tiny).eval()
    shrink_model(cut, vocab)
    x = torch.tensor([ids[0]])
    with torch.no_grad():
        expected = full(x).logits[..., torch.as_tensor(vocab.kept)]
        got = cut(torch.as_tensor(vocab.map(ids[0]))[None]).logits
    assert got.shape[-1] == vocab.size
    assert torch.allclose(got, expected, atol=1e-5)
    assert cut.config.vocab_size == vocab.size
    assert cut.config.eos_token_id == vocab.old_to_new[full.config.eos_token_id]
    # Saved and loaded as an ordinary folder (tied embeddings stay tied).
    cut.save_pretrained(tmp_path / "cut")
    shrink_tokenizer(tok, spec).save_pretrained(tmp_path / "cut")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "cut").eval()
    with torch.no_grad():
        assert torch.allclose(again(torch.as_tensor(vocab.map(ids[0]))[None]).logits, got,
                              atol=1e-6)


def test_check_same_split_and_remap():
    from staff.data.formatting import TokenizedExample

    vocab = TaskVocabulary(kept=np.array([0, 2, 5]), old_to_new=np.array([0, -1, 1, -1, -1, 2]))
    old = [TokenizedExample("a", [0, 5, 2], [-100, 5, 2], False)]
    new = remap_examples(old, vocab)
    assert new[0].input_ids == [0, 2, 1] and new[0].labels == [-100, 2, 1]
    check_same_split(old, new, vocab)
    with pytest.raises(VocabularyError, match="splits 1 sample"):
        check_same_split(old, [TokenizedExample("a", [0, 1, 2], [-100, 1, 2], False)], vocab)


def test_staff_draft_with_the_task_vocabulary_writes_a_folder_select_accepts(tmp_path,
                                                                             alpaca_file):
    from typer.testing import CliRunner

    from staff.cli import app
    from staff.config import load_config
    from staff.pipeline import Pipeline

    target = str(build_tiny_model(tmp_path / "target", seed=3, layers=4))
    out = tmp_path / "draft"
    result = CliRunner().invoke(app, [
        "draft", "--data", str(alpaca_file), "--target", target, "-o", str(out),
        "--keep-layers", "2", "--heal-steps", "3", "--set", "data.format=alpaca",
        "--set", "draft.held_out=8", "--set", "draft.task_vocabulary=true", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "draft.json").read_text())
    assert record["vocabulary"]["draft"] < record["vocabulary"]["target"]
    assert len(record["heal"]["kl"]) == 3 and all(np.isfinite(record["heal"]["kl"]))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == record["vocabulary"]["draft"] == len(
        AutoTokenizer.from_pretrained(out))
    cfg = load_config(None, [f"data.path={alpaca_file}", "data.format=alpaca",
                             f"small.name={out}", f"target.name={target}",
                             f"output_dir={tmp_path / 'run'}", "finetune.epochs=1",
                             "selection.regions=4", "selection.verify_per_region=2",
                             "report.enabled=false", "lora.r=4"])
    run = Pipeline(cfg, show_progress=False).run_all()
    assert len(run.ids[0.9]) == 4
    # The draft sees the same tokens as the target: the same response lengths per sample.
    scores = run.scores.set_index("id")
    assert (scores["n_response_tokens"] > 0).all()
