"""Fine-tuning on a coreset, evaluation (generation + metrics) and the benchmark grid, on the
tiny random Llama of conftest (no network)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from staff.config import ConfigError
from staff.evaluation.metrics import UnicodeTokenizer, bleu4, rouge_l, score_predictions

WORDS = ["a", "dog", "cat", "runs", "in", "the", "park", "ein", "Hund", "rennt", "im", "Park"]


@pytest.fixture()
def translation_files(tmp_path):
    """40 training pairs (en, de) and 6 held-out pairs with two references (de, de2)."""
    import random

    rng = random.Random(0)

    def sentence(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    train = [{"id": f"t{i}", "en": sentence(2, 8), "de": sentence(2, 6)} for i in range(40)]
    test = [{"id": f"e{i}", "en": sentence(2, 8), "de": sentence(2, 6), "de2": sentence(2, 6)}
            for i in range(6)]
    paths = {}
    for name, rows in (("train", train), ("test", test)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


DATA = {"format": "template", "prompt_template": "Translate English to German.\nEnglish: {en}\n"
        "German:", "response_template": " {de}", "cutoff_len": 48}
EVAL = {"max_new_tokens": 6, "batch_size": 4, "references": ["{de}", "{de2}"]}
TRAIN = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def train_eval_config(tmp_path, files, model_dir, **over):
    from staff.evaluation.config import load_train_eval_config

    tree = {"data": dict(DATA, path=str(files["train"])),
            "eval": dict(EVAL, path=str(files["test"])), "model": {"name": model_dir},
            "lora": LORA, "finetune": TRAIN, "output_dir": str(tmp_path / "ft")}
    tree.update(over)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path, load_train_eval_config(path)


# ----------------------------------------------------------------------------- metrics

def test_rouge_l_by_hand_and_best_of_several_references():
    # LCS("the cat sat on the mat", "the cat is on the mat") = the cat on the mat: 5 of 6 each.
    assert rouge_l(["the cat sat on the mat"], [["the cat is on the mat"]]) == \
        pytest.approx([100 * 5 / 6])
    # P = 2/2, R = 2/4 -> F = 2PR/(P+R) = 2/3.
    assert rouge_l(["a b"], [["a x b y"]]) == pytest.approx([100 * 2 / 3])
    # With two references a prediction takes its best one.
    assert rouge_l(["a b", "c d"], [["x y", "a x b y"], ["c d"]]) == pytest.approx(
        [100 * 2 / 3, 100.0])
    assert rouge_l(["", "q"], [["a"], ["a"]]) == [0.0, 0.0]


def test_rouge_tokenizer_keeps_umlauts_and_matches_the_default_on_ascii():
    from rouge_score import rouge_scorer

    assert UnicodeTokenizer().tokenize("Ein weißer Hund, über 2 Zäune!") == \
        ["ein", "weißer", "hund", "über", "2", "zäune"]
    default = rouge_scorer.RougeScorer(["rougeL"])
    for pred, ref in [("The cat, sat on THE mat!", "the cat is on the mat."),
                      ("A man in an orange hat.", "A man with an orange hat staring."),
                      ("x1 y-2 z", "x1 z y 2")]:
        want = 100 * default.score(ref, pred)["rougeL"].fmeasure
        assert rouge_l([pred], [[ref]]) == pytest.approx([want])
    # "weißen" is one token, not "wei" + "en": only the full word matches.
    assert rouge_l(["weißen"], [["weiß en"]]) == [0.0]


def test_bleu4_by_hand_brevity_penalty_and_multi_reference():
    # One 4-gram corpus: precisions 4/5, 3/4, 2/3, 1/2; same length, so no brevity penalty.
    score, signature = bleu4(["a b c d e"], [["a b c d f"]])
    assert score == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25, abs=1e-6)
    assert "nrefs:1" in signature and "tok:13a" in signature
    # All n-grams match, 4 of 6 reference words: BP = exp(1 - 6/4).
    assert bleu4(["a b c d"], [["a b c d e f"]])[0] == pytest.approx(100 * math.exp(-0.5),
                                                                      abs=1e-6)
    # A prediction equal to its second reference is perfect; the first alone is not.
    assert bleu4(["a b c d e"], [["q r s t u", "a b c d e"]])[0] == pytest.approx(100.0)
    assert bleu4(["a b c d e"], [["q r s t u"]])[0] < 1.0
    # Samples may have different numbers of references.
    both = bleu4(["a b c d e", "f g h i j"], [["a b c d e"], ["z", "f g h i j"]])
    assert both[0] == pytest.approx(100.0) and "nrefs:var" in both[1]


def test_score_predictions_checks_its_input():
    out = score_predictions(["a b c d e", "x"], [["a b c d e"], ["y"]])
    assert out["n"] == 2 and out["rouge_l"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        score_predictions(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"references\[0\] == \[\], must be a non-empty list"):
        score_predictions(["a"], [[]])


def test_score_predictions_reports_words_generated_per_reference_word():
    # 6 + 1 words generated; references 4 and the mean of 2 and 4 words (3): 7 / 7 = 1.0.
    out = score_predictions(["a b c d e f", "x"], [["a b c d"], ["y z", "y z w v"]])
    assert out["per_sample_words"] == [(6, 4.0), (1, 3.0)]
    assert out["length_ratio"] == pytest.approx(1.0)
    assert score_predictions(["a b c d e f g h"], [["a b c d"]])["length_ratio"] == 2.0


# ----------------------------------------------------------------------------- generation

def test_generation_helpers():
    from staff.evaluation.generate import cut_at_stop, fit_prompt, left_pad

    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert fit_prompt([1, 10, 11, 12, 13], 3, bos=1) == [1, 12, 13]  # BOS kept, end kept
    assert fit_prompt([10, 11, 12, 13], 3, bos=1) == [11, 12, 13]
    assert fit_prompt([10, 11], 3, bos=1) == [10, 11]
    assert cut_at_stop(" Ein Hund.\nEnglish: x", ["\n"]) == "Ein Hund."
    assert cut_at_stop(" ab ", []) == "ab"
    # A leading line break (an untuned model's habit after "Summary:") does not end the answer.
    assert cut_at_stop("\n\n The memo is sent.\n#Person1#: ok", ["\n"]) == "The memo is sent."
    assert cut_at_stop("\n \n", ["\n"]) == ""


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from staff.evaluation.generate import greedy_generate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [tok(t)["input_ids"] for t in
               ["English: a dog runs in the park. German:", "Summary:", "What is 12 plus 35?"]]
    kw = dict(max_new_tokens=5, show_progress=False)
    batched = greedy_generate(model, tok, prompts, batch_size=3, **kw)
    alone = [greedy_generate(model, tok, [p], batch_size=1, **kw)[0] for p in prompts]
    assert batched == alone and any(batched)
    threads = torch.get_num_threads()
    assert greedy_generate(model, tok, prompts, batch_size=2, threads=1, **kw) == batched
    assert torch.get_num_threads() == threads  # restored


# ----------------------------------------------------------------------------- finetune/evaluate

def test_finetune_on_ids_writes_adapter_and_is_skipped_when_done(tmp_path, translation_files,
                                                                  tiny_model_dir):
    from staff.evaluation.run import TrainEval

    _, cfg = train_eval_config(tmp_path, translation_files, tiny_model_dir)
    assert cfg.finetune.warmup_ratio == 0.1 and cfg.finetune.epochs == 1  # file value kept
    runner = TrainEval(cfg, show_progress=False)
    out = tmp_path / "ft"
    ids = ["t3", "t1", "t7", "t20"]
    first = runner.finetune(out, ids)
    assert not first.skipped and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "ids.txt").read_text().split() == ["t1", "t3", "t7", "t20"]  # data order
    history = json.loads((out / "history.json").read_text())
    assert history["steps"] == 1 and len(history["loss"]) == 1  # 4 samples, batch 8, 1 epoch
    assert first.info["samples"] == 4 and not (out / "finetune_work").exists()
    assert not list(out.rglob(".*tmp*"))
    again = runner.finetune(out, list(reversed(ids)))
    assert again.skipped and again.info == first.info
    with pytest.raises(ConfigError, match="1 of 2 ids are not in the training data .*'nope'"):
        runner.finetune(out, ["t1", "nope"])


def test_paper_recipe_is_the_default(tmp_path, translation_files, tiny_model_dir):
    _, cfg = train_eval_config(tmp_path, translation_files, tiny_model_dir,
                               finetune={"learning_rate": 1e-4})
    f = cfg.finetune
    assert (f.epochs, f.batch_size, f.warmup_ratio, f.learning_rate) == (4, 8, 0.1, 1e-4)
    with pytest.raises(ConfigError, match="eval.max_new_tokens == 48, must be < "
                                          "data.cutoff_len == 48"):
        train_eval_config(tmp_path, translation_files, tiny_model_dir,
                          eval=dict(EVAL, path="x", max_new_tokens=48))
    with pytest.raises(ConfigError, match="eval.path == data.path == .*: evaluate on a "
                                          "held-out split"):
        train_eval_config(tmp_path, translation_files, tiny_model_dir,
                          eval=dict(EVAL, path=str(translation_files["train"])))
    with pytest.raises(ConfigError, match="unknown option eval.beams"):
        train_eval_config(tmp_path, translation_files, tiny_model_dir,
                          eval=dict(EVAL, path="x", beams=2))


def test_evaluate_writes_predictions_and_consistent_metrics(tmp_path, translation_files,
                                                            tiny_model_dir):
    from staff.evaluation.run import TrainEval

    _, cfg = train_eval_config(tmp_path, translation_files, tiny_model_dir)
    runner = TrainEval(cfg, show_progress=False)
    tuned = runner.finetune(tmp_path / "ft")
    metrics = runner.evaluate(tmp_path / "ft" / "eval", tuned.adapter_dir, tuned.model)
    rows = [json.loads(l) for l in (tmp_path / "ft" / "eval" / "predictions.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    test = [json.loads(l) for l in translation_files["test"].read_text().splitlines()]
    assert [r["id"] for r in rows] == [t["id"] for t in test]
    assert [r["references"] for r in rows] == [[t["de"], t["de2"]] for t in test]
    again = score_predictions([r["prediction"] for r in rows], [r["references"] for r in rows])
    assert metrics["rouge_l"] == pytest.approx(again["rouge_l"])
    assert metrics["bleu"] == pytest.approx(again["bleu"])
    assert metrics["n"] == 6 and metrics["references_per_sample"] == 2
    # From the adapter on disk (a fresh runner) the predictions are the same.
    fresh = TrainEval(cfg, show_progress=False)
    other = fresh.evaluate(tmp_path / "eval2", tuned.adapter_dir)
    rows2 = [json.loads(l) for l in (tmp_path / "eval2" / "predictions.jsonl").read_text()
             .splitlines()]
    assert [r["prediction"] for r in rows2] == [r["prediction"] for r in rows]
    assert other["fingerprint"] == metrics["fingerprint"]
    # Cached: same inputs, no new generation.
    mtime = (tmp_path / "eval2" / "metrics.json").stat().st_mtime_ns
    fresh.evaluate(tmp_path / "eval2", tuned.adapter_dir)
    assert (tmp_path / "eval2" / "metrics.json").stat().st_mtime_ns == mtime
    untuned = fresh.evaluate(tmp_path / "eval-untuned")
    assert untuned["adapter"] is None and untuned["fingerprint"] != metrics["fingerprint"]


def test_finetuning_learns_an_answer_and_generation_stops_at_eos(tmp_path, translation_files,
                                                                tiny_model_dir):
    """End to end through the same prompt ids in training and generation: every training
    answer is 'ein Hund', so the tuned model must say exactly that (and stop: EOS)."""
    from staff.evaluation.run import TrainEval

    for name in ("train", "test"):
        rows = [dict(json.loads(l), de="ein Hund", de2="ein Hund")
                for l in files_lines(translation_files[name])]
        translation_files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, cfg = train_eval_config(tmp_path, translation_files, tiny_model_dir,
                               finetune={"epochs": 8, "learning_rate": 2e-2, "batch_size": 8},
                               eval=dict(EVAL, path=str(translation_files["test"]),
                                         max_new_tokens=12))
    runner = TrainEval(cfg, show_progress=False)
    untuned = runner.evaluate(tmp_path / "u")
    tuned = runner.finetune(tmp_path / "ft")
    metrics = runner.evaluate(tmp_path / "ft" / "eval", tuned.adapter_dir, tuned.model)
    preds = [json.loads(l)["prediction"] for l in
             files_lines(tmp_path / "ft" / "eval" / "predictions.jsonl")]
    assert preds == ["ein Hund"] * 6
    assert metrics["rouge_l"] == pytest.approx(100.0) and untuned["rouge_l"] < 50


def files_lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_cli_finetune_and_evaluate(tmp_path, translation_files, tiny_model_dir):
    from typer.testing import CliRunner

    from staff.cli import app

    path, _ = train_eval_config(tmp_path, translation_files, tiny_model_dir)
    ids = tmp_path / "ids.txt"
    ids.write_text("t1\nt2\nt3\n")
    runner = CliRunner()
    res = runner.invoke(app, ["finetune", "-c", str(path), "--ids", str(ids), "-q"])
    assert res.exit_code == 0, res.output
    assert "(3 samples" in res.output
    res = runner.invoke(app, ["evaluate", "-c", str(path), "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.count("ROUGE-L") == 2  # tuned and the untuned reference
    for name in ("eval", "eval-untuned"):
        assert (tmp_path / "ft" / name / "metrics.json").is_file()
    res = runner.invoke(app, ["evaluate", "-c", str(path), "-q", "--adapter",
                              str(tmp_path / "none")])
    assert res.exit_code == 2 and "error: no adapter at" in res.output
    for command in ("finetune", "evaluate", "bench"):
        res = runner.invoke(app, [command, "--help"])
        assert res.exit_code == 0 and "--set" in res.output


# ----------------------------------------------------------------------------- the grid

ALL_METHODS = ("staff", "random", "grand", "el2n", "ccs", "d2")


def bench_file(tmp_path, files, model_dir, methods=ALL_METHODS, rates=(0.5, 0.75)):
    tree = {
        "title": "tiny",
        "select": {"data": dict(DATA, path=str(files["train"])),
                   "small": {"name": model_dir}, "target": {"name": model_dir},
                   "lora": LORA, "finetune": TRAIN, "scoring": {"batch_size": 8},
                   "selection": {"regions": 4, "verify_per_region": 2},
                   "report": {"enabled": False}},
        "lora": LORA, "finetune": TRAIN, "eval": dict(EVAL, path=str(files["test"])),
        "methods": list(methods), "pruning_rates": list(rates), "seeds": [0],
        "output_dir": str(tmp_path / "bench"),
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_bench_grid_end_to_end_resumes_and_writes_tables(tmp_path, translation_files,
                                                        tiny_model_dir, monkeypatch):
    import staff.training.lora as lora_module
    from staff.bench import Grid, load_bench_config

    path = bench_file(tmp_path, translation_files, tiny_model_dir)
    cfg = load_bench_config(path)
    calls = []
    real = lora_module.finetune_lora
    monkeypatch.setattr(lora_module, "finetune_lora",
                        lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    results = Grid(cfg, show_progress=False).run()
    out = tmp_path / "bench"
    # 6 methods x 2 rates coresets (20 and 10 of 40); on all 40: the full-data cell and
    # STAFF's small model. The small model is the target here, so the four target-scoring
    # baselines (which share one fine-tuned target) take STAFF's instead of fine-tuning again,
    # and its scores; D2 alone scores it again, for the embeddings its pick reads.
    assert sorted(n for n in calls if n != 40) == [10] * 6 + [20] * 6
    assert calls.count(40) == 2
    state = json.loads((out / "select" / "baselines" / "s0" / "state.json").read_text())
    assert {s: e.get("adopted_from", "") for s, e in state["stages"].items()} == {
        "train-target": f"{out / 'select' / 'staff' / 's0'} (train-small)",
        "score-target": "", "pick": ""}   # D2's own scoring, the last of the four
    cells = results["cells"]
    assert set(cells) == {"untuned", "full/s0"} | {f"{m}/p{p}/s0" for m in ALL_METHODS
                                                   for p in ("0.50", "0.75")}
    assert cells["staff/p0.75/s0"]["n_train"] == 10 and cells["full/s0"]["n_train"] == 40
    ids = (out / "cells" / "staff" / "p0.75" / "s0" / "ids.txt").read_text().split()
    selected = (out / "select" / "staff" / "s0" / "selections" / "p0.75" / "ids.txt").read_text()
    assert sorted(ids) == sorted(selected.split())
    assert set(results["selection"]) == {f"{m}/s0" for m in ALL_METHODS}
    assert results["selection"]["staff/s0"]["overhead"] > 0
    assert set(results["selection"]["grand/s0"]["timings"]) == {"train-target", "score-target",
                                                                "pick"}

    tables = (out / "tables.md").read_text(encoding="utf-8")
    blocks = [b for b in tables.split("\n\n") if b.startswith("| Method")]
    # Table 1 for the loss, ROUGE-L, BLEU-4 and the output length; the differences to Random
    # and to the best baseline for the loss and ROUGE-L; Table 2; Table 3 (equal compute).
    assert len(blocks) == 10
    cost = blocks.pop().splitlines()
    # Every coreset cell's (method, rate) and the full-data cell, the latter at 1.00x.
    assert len(cost) == 2 + 6 * 2 + 1
    assert any(r.startswith("| Full data (p = 0) | 0.00 | 0 |") and "| 1.00× |" in r
               for r in cost)
    ratio_rows = blocks[3].splitlines()[2:]
    assert all(float(r.split(" | ")[1].split(" ")[0]) > 0 for r in ratio_rows[:-2])
    blocks = blocks[1:3] + blocks[-1:]  # ROUGE-L, BLEU-4, Table 2 (as before the loss)
    for block in blocks[:2]:
        lines = block.splitlines()
        assert lines[0] == "| Method | p = 50% | p = 75% |"
        assert [l.split(" | ")[0] for l in lines[2:]] == [
            "| Random", "| GraNd", "| EL2N", "| CCS", "| D2 Pruning", "| STAFF",
            "| *Full data (p = 0)*", "| *Untuned target*"]  # the paper's row order
        assert all(l.count("|") == 4 for l in lines)
    assert [l.split(" | ")[0] for l in blocks[2].splitlines()[2:]] == [
        "| Random", "| GraNd", "| EL2N", "| CCS", "| D2 Pruning", "| STAFF"]
    # The baselines' fine-tuning was STAFF's: marked, with a footnote saying so.
    grand_row = blocks[2].splitlines()[3]
    assert "train-target " in grand_row and "† " not in grand_row.split("train-target")[0]
    assert re.search(r"train-target \d+\.\d†, score-target \d+\.\d†, pick", grand_row)
    assert "†" not in blocks[2].splitlines()[-1]  # the STAFF row
    assert "\n\n† The same work as another selection run" in tables
    assert f"{cells['staff/p0.50/s0']['rouge_l']:.1f}" in blocks[0]

    # Again: nothing is fine-tuned or generated, the results stay.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    stamps.update({p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")})
    calls.clear()
    again = Grid(load_bench_config(path), show_progress=False).run()
    assert calls == []
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert again["cells"] == cells

    # A partial call at a new rate runs only that cell (+ the cheap selection pick), and the
    # table gets its column.
    from typer.testing import CliRunner

    from staff.cli import app

    res = CliRunner().invoke(app, ["bench", str(path), "--methods", "staff", "--rates", "0.9",
                                   "-q"])
    assert res.exit_code == 0, res.output
    assert sorted(n for n in calls if n != 40) == [4]
    assert "| Method | p = 50% | p = 75% | p = 90% |" in res.output
    assert "| Random | 0.0 | 0.0 | – |" in res.output  # random at 90% was not run


def test_adopted_stages_give_the_selection_a_run_of_its_own_gives(tmp_path, translation_files,
                                                                  tiny_model_dir):
    """STAFF with the small model = the target takes the baselines' fine-tuned, scored target;
    its coresets must be those of a STAFF run that does the work itself. A small model that is
    not the target takes nothing."""
    import shutil

    from staff.bench import load_bench_config
    from staff.bench.shared_stages import adopt_shared_stages
    from staff.pipeline import select

    cfg = load_bench_config(bench_file(tmp_path, translation_files, tiny_model_dir))
    baselines = cfg.selection_config("grand", 0, [0.5, 0.75])
    select(baselines, show_progress=False)
    staff = cfg.selection_config("staff", 0, [0.5, 0.75])
    assert adopt_shared_stages(staff, [Path(baselines.output_dir)]) == ["train-small", "score"]
    adopted = select(staff, show_progress=False)
    assert adopted.timings["train-small"] == json.loads(
        (Path(baselines.output_dir) / "state.json").read_text())["stages"]["train-target"]["seconds"]

    own = dataclasses.replace(staff, output_dir=str(tmp_path / "own"))
    alone = select(own, show_progress=False)
    assert alone.ids == adopted.ids
    pd.testing.assert_frame_equal(pd.read_csv(Path(own.output_dir) / "scores.csv"),
                                  pd.read_csv(Path(staff.output_dir) / "scores.csv"))

    # Nothing to take again; and nothing when the small model differs from the target.
    assert adopt_shared_stages(staff, [Path(baselines.output_dir)]) == []
    other_small = tmp_path / "other-small"
    shutil.copytree(tiny_model_dir, other_small)
    differs = dataclasses.replace(staff, output_dir=str(tmp_path / "differs"),
                                  small=dataclasses.replace(staff.small, name=str(other_small)))
    assert adopt_shared_stages(differs, [Path(baselines.output_dir)]) == []
    assert not (tmp_path / "differs").exists()


def test_baselines_take_the_oracles_scores_and_d2_alone_scores_again(tmp_path,
                                                                    translation_files,
                                                                    tiny_model_dir):
    """With the small model = the target, CCS takes STAFF's fine-tuning and scores (its
    score-target is STAFF's score) and scores nothing itself; D2, whose pick reads the target's
    embeddings, which STAFF's score does not write, scores the target again in that folder."""
    from staff.bench import load_bench_config
    from staff.bench.shared_stages import adopt_shared_stages
    from staff.pipeline import select
    from staff.runs.layout import SCORES, TARGET_EMBEDDINGS, TARGET_SCORES

    cfg = load_bench_config(bench_file(tmp_path, translation_files, tiny_model_dir))
    staff = cfg.selection_config("staff", 0, [0.5])
    select(staff, show_progress=False)
    ccs = cfg.selection_config("ccs", 0, [0.5])
    assert adopt_shared_stages(ccs, [Path(staff.output_dir)]) == ["train-target", "score-target"]
    select(ccs, show_progress=False)
    folder = Path(ccs.output_dir)
    pd.testing.assert_frame_equal(pd.read_csv(folder / TARGET_SCORES),
                                  pd.read_csv(Path(staff.output_dir) / SCORES))
    assert not (folder / TARGET_EMBEDDINGS).exists()
    state = json.loads((folder / "state.json").read_text())["stages"]
    assert state["score-target"]["adopted_from"].endswith("(score)")

    d2 = cfg.selection_config("d2", 0, [0.5])
    assert d2.output_dir == ccs.output_dir       # the baselines share one folder
    assert adopt_shared_stages(d2, [Path(staff.output_dir)]) == []
    picked = select(d2, show_progress=False)
    assert np.load(folder / TARGET_EMBEDDINGS).shape[0] == 40
    state = json.loads((folder / "state.json").read_text())["stages"]
    assert "adopted_from" not in state["score-target"]
    assert "adopted_from" in state["train-target"]   # the adapter was there: not fine-tuned again
    assert len(picked.ids[0.5]) == 20
    # The scores it wrote again are the ones CCS picked from.
    pd.testing.assert_frame_equal(pd.read_csv(folder / TARGET_SCORES),
                                  pd.read_csv(Path(staff.output_dir) / SCORES))


def test_d2_at_another_seed_takes_the_stage1_seeds_embeddings(tmp_path, translation_files,
                                                               tiny_model_dir, monkeypatch):
    """With stage 1 held fixed, a seed's baselines folder restored from an archive has
    score-target done but neither embeddings nor adapter; D2's pick there takes both from the
    stage-1 seed's folder instead of fine-tuning and scoring the target again."""
    import staff.training.lora as lora_module
    from staff.bench import load_bench_config
    from staff.bench.shared_stages import adopt_shared_stages
    from staff.pipeline import select
    from staff.runs.layout import TARGET_EMBEDDINGS, adapter_dir

    cfg = load_bench_config(bench_file(tmp_path, translation_files, tiny_model_dir))
    cfg.stage1_seed = 0
    seed0 = cfg.selection_config("d2", 0, [0.5])
    select(seed0, show_progress=False)
    seed1 = cfg.selection_config("d2", 1, [0.5])
    first, second = Path(seed0.output_dir), Path(seed1.output_dir)
    # What bench/publish.py archives and resume_from restores: no weights, no embeddings.
    shutil.copytree(first, second, ignore=shutil.ignore_patterns(
        adapter_dir("target"), TARGET_EMBEDDINGS, "selections"))
    state = json.loads((second / "state.json").read_text())
    del state["stages"]["pick"]
    (second / "state.json").write_text(json.dumps(state))

    calls = []
    monkeypatch.setattr(lora_module, "finetune_lora", lambda *a, **k: calls.append(a))
    assert adopt_shared_stages(seed1, [first]) == []      # nothing to take: both stages done
    assert np.array_equal(np.load(second / TARGET_EMBEDDINGS), np.load(first / TARGET_EMBEDDINGS))
    assert (second / adapter_dir("target")).is_dir()
    picked = select(seed1, show_progress=False)
    assert calls == []                                    # the target was not fine-tuned again
    stages = json.loads((second / "state.json").read_text())["stages"]
    assert stages["score-target"] == json.loads((first / "state.json").read_text()
                                                )["stages"]["score-target"]  # not redone
    assert len(picked.ids[0.5]) == 20


def test_reference_cells_reuse_another_benchs_untuned_and_full_cells(
        tmp_path, translation_files, tiny_model_dir, tiny_target_dir, monkeypatch):
    """A bench that differs only in select.small takes the untuned and full-data cells of the
    bench it names, and refuses one evaluated another way."""
    import staff.training.lora as lora_module
    from staff.bench import Grid, load_bench_config
    from staff.config import ConfigError

    first = tmp_path / "a"
    first.mkdir()
    Grid(load_bench_config(bench_file(first, translation_files, tiny_model_dir,
                                      methods=("random",), rates=(0.5,))),
         show_progress=False).run()
    second = tmp_path / "b"
    second.mkdir()
    path = bench_file(second, translation_files, tiny_model_dir, methods=("staff",), rates=(0.5,))
    tree = yaml.safe_load(path.read_text())
    tree["select"]["small"]["name"] = tiny_target_dir
    tree["reference_cells"] = str(first / "bench")
    path.write_text(yaml.safe_dump(tree))
    calls = []
    real = lora_module.finetune_lora
    monkeypatch.setattr(lora_module, "finetune_lora",
                        lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    results = Grid(load_bench_config(path), show_progress=False).run()
    reference = json.loads((first / "bench" / "results.json").read_text())["cells"]
    assert results["cells"]["full/s0"]["rouge_l"] == reference["full/s0"]["rouge_l"]
    assert results["cells"]["untuned"] == reference["untuned"]
    assert calls.count(40) == 1  # STAFF's small model only; no full-data fine-tuning here
    assert not (second / "bench" / "cells" / "full").exists()

    tree["eval"]["max_new_tokens"] = 5
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match="evaluates with other eval settings"):
        Grid(load_bench_config(path), show_progress=False).run()


def test_bench_config_errors(tmp_path, translation_files, tiny_model_dir):
    from staff.bench import load_bench_config

    path = bench_file(tmp_path, translation_files, tiny_model_dir)
    with pytest.raises(ConfigError, match="methods contains 'best', must be one of staff, random"):
        load_bench_config(path, ["methods=[staff, best]"])
    with pytest.raises(ConfigError, match="select.selection.method is set by the grid: use the "
                                          "top-level methods instead"):
        load_bench_config(path, ["select.selection.method=random"])
    with pytest.raises(ConfigError, match="unknown option select.scoring.bogus"):
        load_bench_config(path, ["select.scoring.bogus=1"])
    with pytest.raises(ConfigError, match="pruning_rates contains 1.0, must be in"):
        load_bench_config(path, ["pruning_rates=[0.5, 1.0]"])
    cfg = load_bench_config(path)
    run = cfg.selection_config("random", 3, [0.9, 0.5])
    assert (run.seed, run.selection.method, run.selection.pruning_rates) == (3, "random",
                                                                             [0.5, 0.9])
    assert run.output_dir.endswith("select/random/s3")
    # The target-scoring baselines share their fine-tuned target: one folder per seed.
    assert cfg.selection_config("grand", 0, [0.5]).output_dir == \
        cfg.selection_config("d2", 0, [0.5]).output_dir


def test_stop_strings_end_decoding_early_with_the_same_text(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from staff.evaluation.generate import cut_at_stop, greedy_generate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [tok(t)["input_ids"] for t in ["English: a dog", "Summary:", "Sort 4 1 3 2:"]]
    kw = dict(max_new_tokens=12, batch_size=2, show_progress=False)
    full = greedy_generate(model, tok, prompts, **kw)
    # A stop string taken from the middle of a free-running answer.
    stop = next(t[len(t) // 2] for t in full if len(t) > 2 and not t[len(t) // 2].isspace())
    assert greedy_generate(model, tok, prompts, stop=[stop], **kw) == \
        [cut_at_stop(t, [stop]) for t in full]


def test_decoding_stops_at_a_stop_string_only_after_the_answer_starts(tiny_model_dir):
    import torch
    from transformers import AutoTokenizer

    from staff.evaluation.generate import _StopAfterText

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tok("Summary:")["input_ids"]

    def done(continuation: str) -> bool:
        ids = torch.tensor([prompt + tok(continuation, add_special_tokens=False)["input_ids"]])
        return bool(_StopAfterText(tok, ["\n"], len(prompt))(ids, None)[0])

    assert not done("\n")            # only a line break so far: keep decoding
    assert not done("\n\n the dog")  # the answer has started, no stop yet
    assert done("\n the dog\n")     # the line after the answer: stop
    assert done(" the dog\n")


def test_draft_agreement_script_on_tiny_models(tmp_path, translation_files, tiny_model_dir,
                                              capsys):
    """bench/draft_agreement.py: a draft's effort vs the target's after stage 1, and the cost
    of a training pass, from two bench configs (the target's scores from the second)."""
    import sys
    from pathlib import Path

    from staff.config import load_config
    from staff.draft.run import make_draft

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench_dir))
    import draft_agreement

    cfg = load_config(None, [f"data.path={translation_files['train']}", "data.format=template",
                             "data.prompt_template=English: {en} German:",
                             "data.response_template= {de}", f"target.name={tiny_model_dir}",
                             f"draft.output_dir={tmp_path / 'draft'}", "draft.keep_layers=1",
                             "draft.heal_steps=2", "draft.held_out=8"])
    make_draft(cfg, show_progress=False)
    oracle = bench_file(tmp_path, translation_files, tiny_model_dir, methods=("staff",),
                        rates=(0.5,))
    tree = yaml.safe_load(oracle.read_text())
    tree["select"]["small"]["name"] = str(tmp_path / "draft")
    tree["output_dir"] = str(tmp_path / "bench-draft")
    drafted = tmp_path / "draft.yaml"
    drafted.write_text(yaml.safe_dump(tree))
    draft_agreement.main([str(drafted), "--target-scores-from", str(oracle), "--k", "4",
                          "--repeats", "1", "--cost-samples", "8"])
    summary = json.loads((tmp_path / "bench-draft" / "draft_agreement.json").read_text())
    assert summary["samples"] == 40
    assert -1.0 <= summary["spearman_rho"] <= 1.0 and 0.0 <= summary["rand_index_k4"] <= 1.0
    assert 0.0 <= summary["rand_index_k4_shuffled_target"] <= 1.0
    assert summary["adjusted_rand_index_k4"] <= 1.0
    assert summary["cost_ratio_draft_over_target"] > 0
    assert summary["draft_record"]["layers"]["kept"] and summary["stage1_seconds"]["target"] > 0
    # The target's scores were made (and are kept) in the other bench's baselines folder.
    assert (tmp_path / "bench" / "select" / "baselines" / "s0" / "target_scores.csv").is_file()
    assert not (tmp_path / "bench-draft" / "select" / "baselines").exists()
