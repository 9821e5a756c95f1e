"""GGUF models are converted once into a cache folder and loaded from it (models/gguf_cache.py).

The conversion itself is faked here (a real GGUF takes a minute to read); the slow test at the
end checks on the offline demo model that the cached folder gives the same tokens and logits."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from staff.models import gguf_cache
from staff.models.loading import ModelError, resolve_source


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("STAFF_CACHE", str(root))
    monkeypatch.delenv("STAFF_GGUF_CACHE", raising=False)
    return root


def fake_gguf(folder: Path, content: bytes = b"GGUF fake") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.Q4.gguf"
    path.write_bytes(content)
    return path


def fake_convert(calls: list):
    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")
    return convert


def test_converted_once_then_read_from_the_cache(tmp_path, cache):
    gguf = fake_gguf(tmp_path / "models")
    calls = []
    first = gguf_cache.converted(gguf, "m", fake_convert(calls))
    second = gguf_cache.converted(gguf, "m", fake_convert(calls))
    assert first == second and len(calls) == 1
    assert first.parent == cache / "gguf" and first.name.startswith("model.Q4-")
    assert (first / "config.json").is_file()
    assert [p.name for p in first.parent.iterdir() if ".tmp-" in p.name] == []


def test_a_changed_file_is_converted_again(tmp_path, cache):
    gguf = fake_gguf(tmp_path / "models")
    calls = []
    before = gguf_cache.converted(gguf, "m", fake_convert(calls))
    gguf.write_bytes(b"GGUF another version")
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = gguf_cache.converted(gguf, "m", fake_convert(calls))
    assert after != before and len(calls) == 2


def test_a_failed_conversion_leaves_nothing(tmp_path, cache):
    gguf = fake_gguf(tmp_path / "models")

    def broken(gguf_path, out):
        out.mkdir()
        (out / "config.json").write_text("{}")   # half-written when it fails
        raise ValueError("truncated tensor data")

    with pytest.raises(ValueError, match="truncated"):
        gguf_cache.converted(gguf, "m", broken)
    assert not gguf_cache.cache_folder(gguf).exists()
    assert [p.name for p in (cache / "gguf").iterdir() if not p.name.endswith(".lock")] == []
    calls = []
    gguf_cache.converted(gguf, "m", fake_convert(calls))   # and the next try converts
    assert len(calls) == 1


def test_resolve_source_uses_the_cache_unless_turned_off(tmp_path, cache, monkeypatch):
    gguf = fake_gguf(tmp_path / "models")
    calls = []
    monkeypatch.setattr(gguf_cache, "save_as_folder", fake_convert(calls))
    source, extra = resolve_source(str(gguf))
    assert (source, extra) == (str(gguf_cache.cache_folder(gguf)), {}) and len(calls) == 1
    monkeypatch.setenv("STAFF_GGUF_CACHE", "0")
    assert resolve_source(str(gguf)) == (str(gguf.parent), {"gguf_file": gguf.name})
    assert len(calls) == 1


def test_an_unreadable_gguf_is_one_line_naming_the_model(tmp_path, cache, monkeypatch):
    gguf = fake_gguf(tmp_path / "models")

    def broken(gguf_path, out):
        raise ValueError("GGUF magic invalid\nmore lines")

    monkeypatch.setattr(gguf_cache, "save_as_folder", broken)
    with pytest.raises(ModelError) as err:
        resolve_source(str(gguf))
    assert str(err.value) == f"cannot load model {gguf}: GGUF magic invalid"


def test_an_unwritable_cache_falls_back_to_reading_the_gguf(tmp_path, cache, monkeypatch,
                                                            caplog):
    gguf = fake_gguf(tmp_path / "models")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(cache))

    monkeypatch.setattr(gguf_cache, "converted", denied)
    with caplog.at_level(logging.WARNING, logger="staff.models.loading"):
        assert resolve_source(str(gguf)) == (str(gguf.parent), {"gguf_file": gguf.name})
    assert "set STAFF_CACHE" in caplog.text


def _convert_in_process(gguf: str, log_path: str) -> None:
    def slow_convert(gguf_path, out):
        with open(log_path, "a") as fh:
            fh.write("converted\n")
        time.sleep(0.5)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
    gguf_cache.converted(Path(gguf), "m", slow_convert)


def test_two_processes_convert_once(tmp_path, cache):
    gguf = fake_gguf(tmp_path / "models")
    log_path = tmp_path / "conversions.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_convert_in_process, args=(str(gguf), str(log_path)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log_path.read_text().splitlines() == ["converted"]


@pytest.mark.slow
def test_the_cached_demo_model_is_the_same_model(tmp_path, monkeypatch):
    """SmolLM2 from its GGUF and from the cache folder: the same tokens and the same logits."""
    import torch

    from staff.config import ModelConfig
    from staff.models.loading import load_model, load_tokenizer

    monkeypatch.setenv("STAFF_CACHE", str(tmp_path / "cache"))
    cfg = ModelConfig(name="offline:smollm2-135m-instruct")
    texts = ["Translate English to German.\nEnglish: Two dogs run.\nGerman: Zwei Hunde rennen.",
             "The quick brown fox, 12345 — café. 🙂"]
    loaded = {}
    for cached in ("0", "1"):
        monkeypatch.setenv("STAFF_GGUF_CACHE", cached)
        tokenizer = load_tokenizer(cfg)
        model = load_model(cfg, torch.device("cpu"))
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            loaded[cached] = (batch["input_ids"], model(**batch).logits, tokenizer.chat_template)
    assert resolve_source(cfg.name)[0].startswith(str(tmp_path / "cache"))
    assert torch.equal(loaded["0"][0], loaded["1"][0])
    assert torch.equal(loaded["0"][1], loaded["1"][1])
    assert loaded["0"][2] == loaded["1"][2]


def _gguf_with_special_tokens(path: Path, **ids: int) -> Path:
    """A GGUF file holding only metadata: the special token ids llama.cpp's keys give."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for role, token_id in ids.items():
        writer.add_uint32(gguf_cache.GGUF_SPECIAL_TOKENS[role], token_id)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_special_tokens_come_from_the_gguf_file_not_the_reader(tmp_path):
    # transformers 5.17's GGUF reader called SmolLM2's eos <|im_start|> (id 1) where the file
    # says <|im_end|> (id 2): every response then ended in the wrong token.
    from conftest import build_tokenizer
    from transformers import LlamaConfig

    tokenizer = build_tokenizer()           # <pad> 0, <s> 1, </s> 2, <unk> 3
    tokenizer.eos_token = "<s>"             # what a mislabelling reader gives
    tokenizer.pad_token = None
    model = type("M", (), {"config": LlamaConfig(eos_token_id=1), "generation_config": None})()
    gguf = _gguf_with_special_tokens(tmp_path / "m.gguf", bos_token=1, eos_token=2,
                                     pad_token=2)
    changed = gguf_cache.restore_special_tokens(tokenizer, gguf, model)
    assert changed == {"eos_token": "</s>", "pad_token": "</s>"}
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) == (2, 2, 1)
    assert model.config.eos_token_id == 2
    assert gguf_cache.restore_special_tokens(tokenizer, gguf, model) == {}  # already right
