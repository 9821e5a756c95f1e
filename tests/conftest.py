"""Shared fixtures: a tiny random Llama and its tokenizer, built offline in a temp folder."""

from __future__ import annotations

import json
import os

import pytest

# The tests share a small CPU with other jobs. OpenMP threads that spin while they wait make
# torch 10-20x slower as soon as another process holds a core; sleeping threads do not. Read
# when torch loads its OpenMP runtime, so it is set here, before any test imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CORPUS = [
    "Translate English to German. English: a dog runs in the park. German: ein Hund rennt im Park.",
    "Summarize the dialogue: #Person1#: Hi, how are you? #Person2#: Fine, thanks. Summary: greeting.",
    "What is 12 plus 35? Answer: 47. Reverse the word 'cat': tac. Sort 4 1 3 2: 1 2 3 4.",
    "The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ.",
]


def build_tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>"
                          "{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}")
    return fast


def build_tiny_model(folder, seed: int = 0, layers: int = 2, vocab_size: int = 300):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_target_dir(tmp_path_factory):
    """A second, differently seeded tiny model: the 'target' in pipeline tests."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama-target"), seed=1, layers=3))


@pytest.fixture()
def alpaca_file(tmp_path):
    """A small alpaca-format JSONL dataset of 40 rows with mixed lengths."""
    import random

    rng = random.Random(0)
    rows = []
    for i in range(40):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        words = " ".join(rng.choice(["dog", "cat", "park", "runs", "the"]) for _ in range(rng.randint(1, 12)))
        rows.append({"id": f"s{i}", "instruction": f"Add {a} and {b}.", "input": words,
                     "output": str(a + b) + " " + words[: rng.randint(0, 20)]})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load_bench_script(name: str):
    """A script of bench/ (not a package) imported as a module, for its functions."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
