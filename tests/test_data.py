"""staff.data: readers, formats, ids, tokenization with label masks, truncation, demo rows."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from staff.config import DataConfig
from staff.data import (
    IGNORE_INDEX,
    DataError,
    Example,
    encode_prompt,
    load_rows,
    make_demo_rows,
    to_examples,
    tokenize_examples,
    write_jsonl_atomic,
)
from staff.data import demo as demo_module

# Turns end in "</s>\n": the trailing newline tells the template's own response tokens apart
# from the fallback (response + EOS). The generation prompt ends in "\n" (as ChatML's does), so
# the full conversation's ids extend the prompt's ids.
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}:\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:\n{% endif %}")
CORPUS = ["Add the two numbers. 12 + 35 = 47. Write the word backwards: cat tac.",
          "Summarize the dialogue: #Person1#: Hi, how are you? #Person2#: Fine, thanks.",
          "user: hello assistant: hi there system: be brief. The quick brown fox jumps."]


def make_tokenizer(eos_after: bool = False, chat: bool = True):
    """Tiny byte-level BPE trained in memory; adds <s> (and </s> with eos_after) like Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    single = "<s> $A </s>" if eos_after else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", 1), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def cfg(**kw) -> DataConfig:
    return DataConfig(path=kw.pop("path", "x"), **kw)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def msg(fn, *args):
    with pytest.raises(DataError) as info:
        fn(*args)
    text = str(info.value)
    assert "\n" not in text, "DataError messages are one line"
    return text


# ----------------------------------------------------------------------------- formats

def test_alpaca_prompt_convention_and_auto_detection():
    rows = [{"instruction": "Add.", "input": "1 + 2", "output": "3"},
            {"instruction": "Say hi.", "input": "  ", "output": "hi"},
            {"instruction": "Say yo.", "output": 7}]
    ex = to_examples(rows, cfg())
    assert [e.prompt for e in ex] == ["Add.\n\n1 + 2\n\n", "Say hi.\n\n", "Say yo.\n\n"]
    assert [e.response for e in ex] == ["3", "hi", "7"]
    assert ex[0].row is rows[0] and ex[0].messages is None


@pytest.mark.parametrize("name", ["completion", "response", "output"])
def test_prompt_completion_accepts_each_completion_name(name):
    rows = [{"prompt": "Q: 2+2?\nA:", name: " 4"}]
    (e,) = to_examples(rows, cfg())
    assert (e.prompt, e.response) == ("Q: 2+2?\nA:", " 4")


def test_messages_last_assistant_is_response_and_context_is_kept():
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye?"},
            {"role": "assistant", "content": "Bye"}]
    (e,) = to_examples([{"messages": conv}], cfg())
    assert e.response == "Bye"
    assert e.messages == conv[:4]
    assert e.prompt == "system: Be brief.\nuser: Hi\nassistant: Hello\nuser: Bye?\nassistant:\n"


def test_sharegpt_conversations_map_roles():
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}]
    (e,) = to_examples(rows, cfg(format="messages"))
    assert e.messages == [{"role": "user", "content": "Hi"}] and e.response == "Yo"


def test_messages_without_assistant_or_context_are_errors():
    no_answer = [{"messages": [{"role": "user", "content": "Hi"}]}]
    assert msg(to_examples, no_answer, cfg()) == \
        "data row 1 (id 1): no assistant message in field 'messages'"
    no_context = [{"messages": [{"role": "assistant", "content": "Hi"}]}]
    assert "empty prompt" in msg(to_examples, no_context, cfg())


def test_template_format_and_missing_field():
    c = cfg(format="template", prompt_template="Summarize:\n{dialogue}\n",
            response_template="{summary}")
    (e,) = to_examples([{"id": "d1", "dialogue": "A: hi", "summary": "greeting"}], c)
    assert (e.prompt, e.response, e.id) == ("Summarize:\nA: hi\n", "greeting", "d1")
    rows = [{"id": "d1", "dialogue": "x", "summary": "s"}, {"id": "d2", "dialog": "y"}]
    text = msg(to_examples, rows, c, "train.jsonl")
    assert text.startswith("train.jsonl row 2 (id d2): data.prompt_template uses field "
                           "'dialogue', which the row lacks (fields: dialog, id)")


def test_auto_detection_failure_lists_keys_and_suggests_template():
    text = msg(to_examples, [{"id": 1, "en": "a", "de": "b"}], cfg())
    assert "(de, en, id)" in text and "data.format=template" in text


def test_ids_from_field_or_row_number():
    rows = [{"id": "a", "prompt": "p", "completion": "c"},
            {"prompt": "p", "completion": "c"},
            {"id": "", "prompt": "p", "completion": "c"},
            {"id": 17, "prompt": "p", "completion": "c"}]
    # Rows count from 1, as in every message: row 2's id is "2" (issue 18).
    assert [e.id for e in to_examples(rows, cfg())] == ["a", "2", "3", "17"]
    assert [e.id for e in to_examples(rows, cfg(id_field="key"))] == ["1", "2", "3", "4"]


def test_duplicate_ids_name_id_and_both_rows():
    rows = [{"id": i, "prompt": "p", "completion": "c"} for i in ["a", "b", "c", "b"]]
    assert msg(to_examples, rows, cfg(), "f.jsonl") == \
        "f.jsonl rows 2 and 4: duplicate id 'b' (field 'id'); ids must be unique"


@pytest.mark.parametrize("row, expected", [
    ({"id": "x", "instruction": "Do", "output": " \n"}, "empty response field 'output'"),
    ({"id": "x", "instruction": "Do"}, "missing response field 'output'"),
    ({"id": "x", "instruction": "", "output": "y"}, "empty prompt field 'instruction'"),
    ({"id": "x", "instruction": ["a"], "output": "y"}, "prompt field 'instruction' is a list"),
])
def test_missing_or_empty_fields(row, expected):
    rows = [{"id": f"r{i}", "instruction": "Do", "output": "y"} for i in range(12)] + [row]
    assert msg(to_examples, rows, cfg(format="alpaca"), "train.jsonl") == \
        f"train.jsonl row 13 (id x): {expected}" + (", expected text" if "list" in expected else "")


# ----------------------------------------------------------------------------- readers

def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3 "b": 4}\n', encoding="utf-8")
    assert msg(load_rows, cfg(path=str(path))) == \
        f"{path}:4: not valid JSON (Expecting ',' delimiter)"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    assert msg(load_rows, cfg(path=str(path))).startswith(f"{path}:2: a JSON list")


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    assert msg(load_rows, cfg(path=str(path))).startswith(f"{path}:2: not valid UTF-8 (byte 0xe9)")
    csv_path = tmp_path / "data.csv"
    csv_path.write_bytes(b"a,b\n1,2\n3,\xff\n")
    assert msg(load_rows, cfg(path=str(csv_path))).startswith(f"{csv_path}:3: not valid UTF-8")


@pytest.mark.parametrize("name, content", [("e.jsonl", "\n  \n"), ("e.json", "[]"),
                                           ("e.csv", "a,b\n"), ("e.jsonl", "")])
def test_empty_file_has_no_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert msg(load_rows, cfg(path=str(path))) == f"{path}: no rows"


def test_csv_keeps_strings_and_empty_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,prompt,completion\n007,"a, ""b""\nc",\n8,x,1.50\n', encoding="utf-8")
    assert load_rows(cfg(path=str(path))) == [
        {"id": "007", "prompt": 'a, "b"\nc', "completion": ""},
        {"id": "8", "prompt": "x", "completion": "1.50"}]
    path.write_text("a,b\n1,2\n3\n", encoding="utf-8")
    assert msg(load_rows, cfg(path=str(path))) == f"{path}:3: 1 fields, the header has 2"


def test_json_list_jsonl_named_json_and_pretty_object(tmp_path):
    rows = [{"id": "a", "x": [1, {"y": None}]}, {"id": "b", "x": "é\u2028"}]
    (tmp_path / "l.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    write_jsonl(tmp_path / "lines.json", rows)
    (tmp_path / "one.json").write_text(json.dumps(rows[0], indent=2), encoding="utf-8")
    assert load_rows(cfg(path=str(tmp_path / "l.json"))) == rows
    assert load_rows(cfg(path=str(tmp_path / "lines.json"))) == rows
    assert load_rows(cfg(path=str(tmp_path / "one.json"))) == rows[:1]


def test_parquet_gives_plain_python_values(tmp_path):
    import pandas as pd

    path = tmp_path / "d.parquet"
    pd.DataFrame({"id": ["a", "b"], "n": [1, 2], "t": ["x", None]}).to_parquet(path)
    rows = load_rows(cfg(path=str(path)))
    assert rows == [{"id": "a", "n": 1, "t": "x"}, {"id": "b", "n": 2, "t": None}]
    assert type(rows[0]["n"]) is int


def test_save_to_disk_dataset_and_datasetdict(tmp_path):
    import datasets

    rows = [{"id": str(i), "prompt": f"p{i}", "completion": f"c{i}"} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert load_rows(cfg(path=str(tmp_path / "ds"))) == rows
    assert load_rows(cfg(path=str(tmp_path / "ds"), max_samples=2)) == rows[:2]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                               "test": datasets.Dataset.from_list(rows[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_rows(cfg(path=str(tmp_path / "dd"), split="test")) == rows[:1]
    assert msg(load_rows, cfg(path=str(tmp_path / "dd"), split="dev")) == \
        f"{tmp_path / 'dd'}: no split 'dev' (available: train, test); set data.split"


def test_max_samples_keeps_first_rows(tmp_path):
    rows = [{"i": i} for i in range(10)]
    assert load_rows(cfg(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), max_samples=3)) \
        == rows[:3]


@pytest.mark.parametrize("path", ["missing.jsonl", "./nowhere", "a/b/c", "/abs/x.csv"])
def test_missing_path_is_reported_not_sent_to_the_hub(path):
    assert msg(load_rows, cfg(path=path)) == f"{path}: no such file or folder"


def test_bogus_hub_name_is_one_line_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    # Offline mode fails fast instead of retrying the network for ~25 s.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    text = msg(load_rows, cfg(path="no-such-user-xyz/no-such-dataset"))
    assert text.startswith("no-such-user-xyz/no-such-dataset split train: could not load with "
                           "datasets.load_dataset (")


# Hypothesis: any text (unicode, quotes, commas, newlines, U+2028, empty) survives each writer
# and comes back from load_rows unchanged.
texts = st.text(max_size=40)
rows_strategy = st.lists(st.fixed_dictionaries({k: texts for k in
                                                ["id", "a,b", 'q"uote', "line\nbreak", "ünï"]}),
                         min_size=1, max_size=5)
fast = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@fast
@given(rows=rows_strategy)
def test_jsonl_round_trip(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.jsonl"
        write_jsonl_atomic(rows, path)
        assert load_rows(cfg(path=str(path))) == rows


@fast
@given(rows=rows_strategy)
def test_csv_round_trip(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.csv"
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        assert load_rows(cfg(path=str(path))) == rows


@fast
@given(rows=rows_strategy, numbers=st.lists(st.integers(-2**40, 2**40), min_size=5, max_size=5))
def test_parquet_round_trip(rows, numbers):
    import pandas as pd

    rows = [{**r, "n": n} for r, n in zip(rows, numbers)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "d.parquet"
        pd.DataFrame(rows).to_parquet(path)
        assert load_rows(cfg(path=str(path))) == rows


def test_write_jsonl_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    write_jsonl_atomic([{"a": "é"}], path)
    assert path.read_text(encoding="utf-8") == '{"a": "é"}\n'
    with pytest.raises(TypeError):
        write_jsonl_atomic([{"a": 1}, {"a": object()}], path)
    assert path.read_text(encoding="utf-8") == '{"a": "é"}\n'
    assert os.listdir(path.parent) == ["out.jsonl"], "no temp file left behind"


# ----------------------------------------------------------------------------- tokenization

def test_labels_mask_exactly_the_prompt(tok):
    ex = Example("a", "Add the two numbers.\n\n", "47", {})
    (t,) = tokenize_examples([ex], tok, cfg())
    prompt = tok("Add the two numbers.\n\n")["input_ids"]
    response = tok("47", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert prompt[0] == tok.bos_token_id
    assert t.input_ids == prompt + response and not t.truncated
    assert t.labels == [IGNORE_INDEX] * len(prompt) + response
    assert encode_prompt(ex, tok, cfg()) == prompt


def test_prompt_never_ends_in_an_appended_eos():
    tok = make_tokenizer(eos_after=True)
    assert tok("hi")["input_ids"][-1] == tok.eos_token_id  # the tokenizer appends </s>
    (t,) = tokenize_examples([Example("a", "hi there", "cat", {})], tok, cfg())
    n_prompt = t.labels.count(IGNORE_INDEX)
    assert t.input_ids[:n_prompt] == tok("hi there")["input_ids"][:-1]
    assert t.input_ids[-1] == tok.eos_token_id and t.input_ids.count(tok.eos_token_id) == 1


words = st.lists(st.sampled_from(["cat", "dog", "the", "fox", "47", "é", "\n"]), min_size=1,
                 max_size=60).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(prompt=words, response=words, cutoff=st.integers(8, 40))
def test_truncation_invariants(tok, prompt, response, cutoff):
    c = cfg(cutoff_len=cutoff)
    (full,) = tokenize_examples([Example("a", prompt, response, {})], tok, cfg(cutoff_len=4096))
    (t,) = tokenize_examples([Example("a", prompt, response, {})], tok, c)
    p_full = full.input_ids[:full.labels.count(IGNORE_INDEX)]
    r_full = full.input_ids[len(p_full):]
    n_p = t.labels.count(IGNORE_INDEX)
    p, r = t.input_ids[:n_p], t.input_ids[n_p:]
    assert t.truncated == (len(full.input_ids) > cutoff)
    assert len(t.input_ids) == min(cutoff, len(full.input_ids))
    assert r and r == r_full[:len(r)], "the response keeps its start, at least one token"
    assert p[0] == tok.bos_token_id and len(p) >= 2, "BOS plus at least one prompt token"
    assert p[1:] == p_full[len(p_full) - len(p) + 1:], "the prompt keeps its end"
    if len(r) < len(r_full):
        assert len(p) == 2, "the response is cut only once the prompt is at its minimum"
    assert t.labels[n_p:] == r


def test_truncation_is_logged(tok, caplog):
    exs = [Example(str(i), "the fox " * (40 * i + 1), "cat", {}) for i in range(3)]
    with caplog.at_level("INFO", logger="staff.data.formatting"):
        out = tokenize_examples(exs, tok, cfg(cutoff_len=32))
    assert [t.truncated for t in out] == [False, True, True]
    assert "2 truncated to data.cutoff_len=32" in caplog.text


class ListChat:
    """A tokenizer whose apply_chat_template returns a plain list (transformers 4 style)."""

    def __init__(self, tok):
        self.tok = tok

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def __call__(self, *a, **kw):
        return self.tok(*a, **kw)

    def apply_chat_template(self, *a, **kw):
        return list(self.tok.apply_chat_template(*a, **kw)["input_ids"])


def _split(t):
    n_p = t.labels.count(IGNORE_INDEX)
    assert t.labels[n_p:] == t.input_ids[n_p:] and set(t.labels[:n_p]) == {IGNORE_INDEX}
    return t.input_ids[:n_p], t.input_ids[n_p:]


@pytest.mark.parametrize("wrap", [lambda t: t, ListChat])
def test_chat_template_split(tok, wrap):
    conv = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi there"}]
    exs = (to_examples([{"messages": conv}], cfg())
           + to_examples([{"prompt": " Add 12 + 35 \n", "completion": "47"}], cfg()))
    out = tokenize_examples(exs, wrap(tok), cfg(chat_template=True))
    fulls = [conv, [{"role": "user", "content": "Add 12 + 35"},
                    {"role": "assistant", "content": "47"}]]
    for t, full in zip(out, fulls):
        # The ids are exactly the rendered conversation; the prompt is what generation sees.
        assert t.input_ids == tok.apply_chat_template(full, tokenize=True)["input_ids"]
        prompt, _ = _split(t)
        assert prompt == tok.apply_chat_template(full[:-1], add_generation_prompt=True,
                                                 tokenize=True)["input_ids"]
    assert tok.decode(_split(out[0])[0]) == \
        "<s>system:\nbe brief.</s>\n<s>user:\nhello</s>\n<s>assistant:\n"
    assert tok.decode(_split(out[0])[1]) == "hi there</s>\n"
    assert tok.decode(_split(out[1])[1]) == "47</s>\n"
    assert encode_prompt(exs[1], tok, cfg(chat_template=True)) == _split(out[1])[0]


def test_chat_template_seam_mismatch_splits_the_text():
    tok = make_tokenizer()
    # "assistant: " + "hi" tokenizes differently from "assistant: hi" in byte-level BPE.
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n"
                         "{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}")
    (t,) = tokenize_examples([Example("a", "hello", "hi there", {})], tok, cfg(chat_template=True))
    prompt, response = _split(t)
    assert tok.decode(prompt) == "<s>user: hello</s>\n<s>assistant: "
    assert prompt == tok.apply_chat_template([{"role": "user", "content": "hello"}],
                                             add_generation_prompt=True, tokenize=True)["input_ids"]
    assert tok.decode(response) == "hi there</s>\n", "the template's end of turn is kept"


def test_chat_template_fallback_when_full_does_not_extend_prompt():
    tok = make_tokenizer()
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}ANSWER:{% endif %}")
    (t,) = tokenize_examples([Example("a", "hello", "cat", {})], tok, cfg(chat_template=True))
    n_p = t.labels.count(IGNORE_INDEX)
    assert tok.decode(t.input_ids[:n_p]) == "[user] hello\nANSWER:"
    assert t.input_ids[n_p:] == tok("cat", add_special_tokens=False)["input_ids"] + [2]


def test_chat_template_missing_is_an_error():
    tok = make_tokenizer(chat=False)
    text = msg(tokenize_examples, [Example("a", "p", "r", {})], tok, cfg(chat_template=True))
    assert text.startswith("data.chat_template is true but the tokenizer of ")
    assert text.endswith("has no chat template")


# ----------------------------------------------------------------------------- demo

def test_demo_rows_deterministic_exact_and_seeded():
    assert make_demo_rows(240) == make_demo_rows(240, seed=0)
    assert make_demo_rows(240, seed=1) != make_demo_rows(240)
    for n in (0, 1, 7, 240, 1000):
        rows = make_demo_rows(n)
        assert len(rows) == n and [r["id"] for r in rows] == [f"demo-{i:04d}" for i in range(n)]
    assert load_rows(cfg(path="demo", demo_size=37)) == make_demo_rows(37)


def test_demo_duplicates_wrong_answers_and_difficulty():
    rows = make_demo_rows(240)
    content = lambda r: (r["instruction"], r["input"], r["output"])  # noqa: E731
    notes = [r["note"] for r in rows]
    assert notes.count("duplicate") == 24 and notes.count("wrong_answer") == 12
    for i, r in enumerate(rows):
        earlier = {content(e) for e in rows[:i] if e["note"] == ""}
        if r["note"] == "duplicate":
            assert content(r) in earlier
        if r["task"] == "add":
            a, b = map(int, r["input"].split(" + "))
            assert (int(r["output"]) == a + b) == (r["note"] != "wrong_answer")
    unmarked = [content(r) for r in rows if r["note"] != "duplicate"]
    assert len(set(unmarked)) == len(unmarked), "only marked rows repeat"
    assert {r["difficulty"] for r in rows} == {"easy", "medium", "hard"}
    assert all(len(" ".join(content(r)).split()) < 25 for r in rows)
    assert [e.id for e in to_examples(rows, cfg())] == [r["id"] for r in rows]


@pytest.mark.parametrize("task", [t for ts in demo_module.TASKS.values() for t in ts])
def test_demo_wrong_answers_differ_from_right(task):
    import random

    rng = random.Random(0)
    for _ in range(200):
        _, _, right, wrong = task(rng)
        assert wrong != right
