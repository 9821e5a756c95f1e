"""The powered benchmark's parts: the steps protocol, the held-out loss, the paired bootstrap,
the length baseline, stage 1 held fixed across seeds, variants and cells.csv (tiny models)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from staff.config import ConfigError
from test_bench import ALL_METHODS, bench_file, train_eval_config  # noqa: F401 - fixtures below
from test_bench import translation_files  # noqa: F401 - a fixture


# ----------------------------------------------------------------------------- bootstrap

def test_bootstrap_of_a_constant_difference_is_that_constant():
    from staff.bench.stats import paired_bootstrap

    a = {0: np.arange(50.0), 1: np.arange(50.0) * 2}
    b = {0: np.arange(50.0) - 0.25, 1: np.arange(50.0) * 2 - 0.25, 7: np.zeros(50)}
    diff = paired_bootstrap(a, b, n_boot=2000)
    assert (diff.mean, diff.low, diff.high, diff.seeds, diff.examples) == (0.25, 0.25, 0.25, 2,
                                                                            50)
    assert diff.excludes_zero
    assert paired_bootstrap({0: [1.0]}, {1: [1.0]}) is None  # no common seed


def test_bootstrap_interval_matches_the_normal_theory_interval():
    """One seed, n iid differences with sd sigma: the 95% interval is mean ± 1.96 sigma/sqrt(n)
    (to bootstrap accuracy). Pairing matters: a and b share a large per-example component
    that the difference removes."""
    from staff.bench.stats import paired_bootstrap

    rng = np.random.default_rng(1)
    n, sigma = 4000, 0.5
    shared = rng.normal(0, 10, n)                  # example difficulty, common to both
    d = rng.normal(0.1, sigma, n)
    diff = paired_bootstrap({0: shared + d}, {0: shared}, n_boot=4000, seed=3)
    half = 1.96 * d.std(ddof=1) / np.sqrt(n)
    assert diff.mean == pytest.approx(d.mean())
    assert diff.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert diff.high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert diff.excludes_zero


def test_bootstrap_counts_seed_noise():
    """Differences that vary only between seeds: the interval spans the seeds' spread, and
    with one common seed there is none to see."""
    from staff.bench.stats import paired_bootstrap

    offsets = [-1.0, 0.0, 1.0, 2.0]
    a = {s: np.full(30, o) for s, o in enumerate(offsets)}
    b = {s: np.zeros(30) for s in range(4)}
    diff = paired_bootstrap(a, b, n_boot=4000)
    assert diff.mean == pytest.approx(0.5)
    assert diff.low < 0 < diff.high and not diff.excludes_zero
    assert diff.low >= -1.0 and diff.high <= 2.0
    one = paired_bootstrap({0: a[0]}, b)
    assert (one.low, one.high) == (-1.0, -1.0)


# ----------------------------------------------------------------------------- length

def test_length_selector_keeps_the_longest_responses_and_breaks_ties_by_seed():
    from staff.selection.base import SelectionInput
    from staff.selection.baselines.importance import LengthSelector

    lengths = np.array([3, 9, 1, 9, 5, 7, 5, 5, 2, 8], dtype=float)
    data = SelectionInput(ids=np.arange(10).astype(str), scores={"n_response_tokens": lengths})
    picked = LengthSelector().select(data, 4, seed=0)
    assert sorted(picked.tolist()) == [1, 3, 5, 9]           # 9, 9, 8, 7
    assert list(lengths[picked]) == [9, 9, 8, 7]              # longest first
    # Ties at the boundary (three samples of 5 for two places) are drawn by the seed.
    draws = {tuple(sorted(LengthSelector().select(data, 6, seed=s)[4:].tolist()))
             for s in range(20)}
    assert draws <= {(4, 6), (4, 7), (6, 7)} and len(draws) > 1
    assert LengthSelector().select(data, 6, seed=3).tolist() == \
        LengthSelector().select(data, 6, seed=3).tolist()


def test_length_method_end_to_end_picks_by_the_targets_tokens(tmp_path, translation_files,
                                                              tiny_model_dir):
    from staff.bench import load_bench_config
    from staff.models.loading import load_tokenizer
    from staff.pipeline import select

    cfg = load_bench_config(bench_file(tmp_path, translation_files, tiny_model_dir))
    run = cfg.selection_config("length", 0, [0.75])
    result = select(run, show_progress=False)
    assert list(result.timings) == ["pick"]
    tok = load_tokenizer(run.target)
    rows = [json.loads(line) for line in translation_files["train"].read_text().splitlines()]
    n_tokens = {r["id"]: len(tok(" " + r["de"], add_special_tokens=False)["input_ids"])
                for r in rows}
    chosen = result.ids[0.75]
    assert len(chosen) == 10
    threshold = sorted(n_tokens.values(), reverse=True)[9]
    assert all(n_tokens[i] >= threshold for i in chosen)
    assert sum(n_tokens[i] > threshold for i in chosen) == sum(
        v > threshold for v in n_tokens.values())


# ----------------------------------------------------------------------------- training

def test_steps_protocol_trains_exactly_the_full_data_step_count(tmp_path, translation_files,
                                                                tiny_model_dir):
    from staff.evaluation.run import TrainEval

    _, cfg = train_eval_config(tmp_path, translation_files, tiny_model_dir,
                               finetune=dict(epochs=2, batch_size=4, learning_rate=1e-3))
    te = TrainEval(cfg, show_progress=False)
    full = te.finetune(tmp_path / "full")
    assert full.info["steps"] == te.planned_steps() == 2 * 10  # 40 samples / 4, 2 epochs
    ids = [e.id for e, _ in te.train_examples[:6]]
    epochs = te.finetune(tmp_path / "epochs", ids)
    assert epochs.info["steps"] == 2 * 2                       # ceil(6 / 4) = 2 per epoch
    steps = te.finetune(tmp_path / "steps", ids, steps=te.planned_steps())
    history = json.loads((tmp_path / "steps" / "history.json").read_text())
    assert steps.info["steps"] == len(history["loss"]) == full.info["steps"]
    assert steps.info["fingerprint"] != epochs.info["fingerprint"]
    # Done before: skipped, and the cached steps run is not mistaken for the epochs run.
    assert te.finetune(tmp_path / "steps", ids, steps=te.planned_steps()).skipped
    assert not te.finetune(tmp_path / "steps", ids).skipped


def test_held_out_loss_equals_a_hand_computed_nll(tmp_path, translation_files, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from staff.evaluation.run import TrainEval

    from test_bench import DATA

    # A cutoff that truncates nothing, so that the whole prompt is scored by hand too.
    _, cfg = train_eval_config(tmp_path, translation_files, tiny_model_dir,
                               data=dict(DATA, path=str(translation_files["train"]),
                                         cutoff_len=256))
    te = TrainEval(cfg, show_progress=False)
    result = te.held_out_loss(tmp_path / "eval")
    # By hand: the prompt and the first reference, one example at a time, log-softmax of the
    # plain model's logits at the positions that predict a reference token.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [json.loads(line) for line in translation_files["test"].read_text().splitlines()]
    expected = []
    for row in rows:
        prompt = tok("Translate English to German.\nEnglish: " + row["en"] + "\nGerman:")[
            "input_ids"]
        answer = tok(" " + row["de"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        nll = [-logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(answer)]
        expected.append(sum(nll) / len(nll))
    assert result["n"] == 6 and result["ids"] == [r["id"] for r in rows]
    assert result["per_example"] == pytest.approx(expected, abs=1e-4)
    assert result["loss"] == pytest.approx(np.mean(expected), abs=1e-4)
    cached = te.held_out_loss(tmp_path / "eval")
    assert cached == json.loads((tmp_path / "eval" / "loss.json").read_text())


# ----------------------------------------------------------------------------- the grid

def powered_file(tmp_path, files, model_dir, **over):
    path = bench_file(tmp_path, files, model_dir, methods=("staff", "random", "length"),
                      rates=(0.5, 0.75))
    tree = yaml.safe_load(path.read_text())
    tree.update({"seeds": [0, 1], "stage1_seed": 0, "decode_rates": [0.75],
                 "variants": {"noverify": {"selection": {"verify": False}}},
                 "parts": [{"methods": ["staff", "random", "length", "staff:noverify"]},
                           {"methods": ["staff", "random"], "rates": [0.75],
                            "protocol": "steps", "seeds": [1], "decode": False}]})
    tree.update(over)
    path.write_text(yaml.safe_dump(tree))
    return path


def test_powered_grid_parts_protocols_stage1_and_cells_csv(tmp_path, translation_files,
                                                           tiny_model_dir, monkeypatch):
    import staff.training.lora as lora_module
    from staff.bench import Grid, load_bench_config

    calls = []
    real = lora_module.finetune_lora
    monkeypatch.setattr(lora_module, "finetune_lora", lambda *a, **k: calls.append(
        (len(a[1]), k.get("total_steps"))) or real(*a, **k))
    results = Grid(load_bench_config(powered_file(tmp_path, translation_files,
                                                  tiny_model_dir)), show_progress=False).run()
    out = tmp_path / "bench"
    cells = results["cells"]
    # Stage 1 held fixed: STAFF's small model is fine-tuned once (seed 0) for both seeds and
    # the variant; the full-data cell once per seed. Every other fine-tuning is a coreset.
    assert [c for c in calls if c[0] == 40] == [(40, None)] * 3
    state = json.loads((out / "select" / "staff" / "s1" / "state.json").read_text())
    assert state["stages"]["train-small"]["adopted_from"].startswith(
        str(out / "select" / "staff" / "s0"))
    assert (out / "select" / "staff" / "s1" / "scores.csv").read_bytes() == \
        (out / "select" / "staff" / "s0" / "scores.csv").read_bytes()
    # The steps cells train the full-data step count (40 / 8 = 5 per epoch, 1 epoch).
    assert sorted(c for c in calls if c[1] is not None) == [(10, 5), (10, 5)]
    assert cells["staff/p0.75/s1/steps"]["steps"] == cells["full/s1"]["steps"] == 5
    assert cells["staff/p0.75/s1"]["steps"] == 2
    # Every cell has the loss; only p = 0.75 (and full, untuned) were decoded.
    assert all(e["loss"] > 0 for e in cells.values())
    assert cells["staff/p0.50/s0"]["rouge_l"] is None
    assert cells["staff/p0.75/s0"]["rouge_l"] is not None
    assert cells["staff:noverify/p0.75/s1"]["rouge_l"] is not None
    assert cells["staff/p0.75/s1/steps"]["rouge_l"] is None
    per = results["per_example"]["staff/p0.75/s0"]
    assert len(per["loss"]) == len(per["rouge_l"]) == len(per["words"]) == 6
    # The length ratio of a decoded cell is its predictions' words over the references' (the
    # mean of a sample's two references).
    predictions = [json.loads(line) for line in (out / "cells" / "staff" / "p0.75" / "s0" /
                                                 "eval" / "predictions.jsonl").open()]
    assert per["words"] == [len(p["prediction"].split()) for p in predictions]
    assert cells["staff/p0.75/s0"]["length_ratio"] == pytest.approx(
        sum(per["words"]) / sum(sum(len(r.split()) for r in p["references"]) / 2
                                for p in predictions), abs=1e-4)
    assert cells["staff/p0.50/s0"]["length_ratio"] is None

    rows = list(csv.DictReader((out / "cells.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["dataset", "n_train", "n_test", "small", "target", "method", "rate",
                             "seed", "protocol", "metric", "value"]
    got = {(r["method"], r["rate"], r["seed"], r["protocol"], r["metric"]) for r in rows}
    assert ("staff:noverify", "0.75", "1", "epochs", "rougeL") in got
    assert ("random", "0.75", "1", "steps", "loss") in got
    assert ("random", "0.75", "1", "steps", "rougeL") not in got
    assert ("staff", "0.75", "0", "epochs", "length_ratio") in got
    assert ("length", "0.5", "0", "epochs", "selection_seconds") in got
    assert ("untuned", "", "", "epochs", "loss") in got
    loss_row = next(r for r in rows if r["method"] == "staff" and r["rate"] == "0.5"
                    and r["seed"] == "0" and r["metric"] == "loss")
    assert float(loss_row["value"]) == pytest.approx(cells["staff/p0.50/s0"]["loss"], abs=1e-6)
    assert loss_row["n_train"] == "40" and loss_row["n_test"] == "6"
    assert {r["dataset"] for r in rows} == {tmp_path.name}

    tables = (out / "tables.md").read_text(encoding="utf-8")
    assert "held fixed at seed 0" in tables
    assert "Table 1 (steps protocol" in tables and "| STAFF (noverify) |" in tables
    assert "Difference to Random (epochs protocol), held-out response loss" in tables
    assert "words generated per reference word (greedy outputs" in tables
    # A variant against the paper's rule, paired by seed: the table issue 15 decides by.
    against_staff = tables.split("Difference to STAFF (the paper's rule) (epochs protocol), "
                                 "held-out response loss")[1].split("\n\n")[1]
    assert [l.split(" | ")[0] for l in against_staff.splitlines()[2:]] == ["| STAFF (noverify)"]

    # --tables-only writes the same tables and CSV again from results.json, training nothing.
    from typer.testing import CliRunner

    from staff.cli import app

    csv_text = (out / "cells.csv").read_text()
    (out / "tables.md").unlink()
    (out / "cells.csv").unlink()
    calls.clear()
    res = CliRunner().invoke(app, ["bench", str(powered_file(tmp_path, translation_files,
                                                              tiny_model_dir)),
                                   "--tables-only", "-q"])
    assert res.exit_code == 0, res.output
    assert (out / "tables.md").read_text(encoding="utf-8") == tables
    assert (out / "cells.csv").read_text() == csv_text and calls == []

    # Resumed: nothing trains again.
    calls.clear()
    again = Grid(load_bench_config(powered_file(tmp_path, translation_files, tiny_model_dir)),
                 show_progress=False).run()
    assert calls == [] and again["cells"] == cells


def test_powered_grid_config_errors(tmp_path, translation_files, tiny_model_dir):
    from staff.bench import load_bench_config

    path = powered_file(tmp_path, translation_files, tiny_model_dir)
    with pytest.raises(ConfigError, match="methods contains 'staff:nosuch', but variants has no "
                                          "'nosuch'"):
        load_bench_config(path, ["methods=[staff, 'staff:nosuch']"])
    with pytest.raises(ConfigError, match="protocol == 'weeks', must be one of epochs, steps"):
        load_bench_config(path, ["protocol=weeks"])
    with pytest.raises(ConfigError, match=r"parts\[0\] has unknown key\(s\) \['rate'\]"):
        load_bench_config(path, ["parts=[{rate: [0.5]}]"])
    with pytest.raises(ConfigError, match="variants.bad: unknown option selection.nosuch"):
        load_bench_config(path, ["variants={bad: {selection: {nosuch: 1}}}",
                                 "methods=['staff:bad']", "parts=[]"])
    with pytest.raises(ConfigError, match="decode_rates contains 2.0"):
        load_bench_config(path, ["decode_rates=[2.0]"])


def test_processes_running_other_parts_share_a_bench_folder(tmp_path, translation_files,
                                                            tiny_model_dir):
    """Two Grids opened on one folder before either ran (two processes, one per GPU), each
    running its own part: results.json ends with both parts' cells, not the last writer's."""
    from staff.bench import Grid, load_bench_config

    path = powered_file(tmp_path, translation_files, tiny_model_dir, seeds=[0, 1],
                        full_seeds=[0], decode_rates=None,
                        parts=[{"methods": ["random"], "rates": [0.5]},
                               {"methods": ["length"], "rates": [0.5]}])
    first = Grid(load_bench_config(path), show_progress=False)
    second = Grid(load_bench_config(path), show_progress=False)
    first.run(parts=[1])
    second.run(parts=[2])
    cells = json.loads((tmp_path / "bench" / "results.json").read_text())["cells"]
    assert set(cells) == {"untuned", "full/s0", "random/p0.50/s0", "random/p0.50/s1",
                          "length/p0.50/s0", "length/p0.50/s1"}  # full_seeds: only s0
    with pytest.raises(ConfigError, match=r"parts == \[3\], must be numbers in 1..2"):
        first.run(parts=[3])


def test_bench_and_finetune_configs_read_relative_data_paths_from_their_folder(
        tmp_path, translation_files, tiny_model_dir, monkeypatch):
    """As run configs do: a shipped config works from any working directory."""
    from staff.bench import load_bench_config
    from staff.evaluation.config import load_train_eval_config

    folder = tmp_path / "configs" / "bench"
    folder.mkdir(parents=True)
    tree = yaml.safe_load(bench_file(tmp_path, translation_files, tiny_model_dir).read_text())
    tree["select"]["data"]["path"] = "../../train.jsonl"     # tmp_path/train.jsonl
    tree["eval"]["path"] = "../../test.jsonl"
    (folder / "b.yaml").write_text(yaml.safe_dump(tree))
    train = {k: v for k, v in tree.items() if k in ("lora", "finetune", "eval")}
    train.update(data=tree["select"]["data"], model={"name": tiny_model_dir})
    (folder / "t.yaml").write_text(yaml.safe_dump(train))
    monkeypatch.chdir(tmp_path / "configs")
    cfg = load_bench_config(folder / "b.yaml")
    assert cfg.select.data.path == str(translation_files["train"].resolve())
    assert cfg.eval.path == str(translation_files["test"].resolve())
    te = load_train_eval_config(folder / "t.yaml")
    assert (te.data.path, te.eval.path) == (cfg.select.data.path, cfg.eval.path)
    # An override is read from the working directory, as for run configs.
    over = load_bench_config(folder / "b.yaml", ["select.data.path=x.jsonl"])
    assert over.select.data.path == "x.jsonl"


def test_a_new_option_left_off_keeps_a_benchs_fingerprint(tmp_path, translation_files,
                                                          tiny_model_dir, monkeypatch):
    """results.json made before early_stop existed must still apply: off, the option is not
    hashed; on, it changes the bench's fingerprint."""
    import staff.bench.results as results
    from staff.bench import load_bench_config

    path = powered_file(tmp_path, translation_files, tiny_model_dir)
    hashed = []
    real = results.fingerprint
    monkeypatch.setattr(results, "fingerprint", lambda *parts: hashed.append(parts) or real(*parts))
    off = results.bench_fingerprint(load_bench_config(path))
    assert "early_stop" not in hashed[0][0] and "scoring" in hashed[0][0]
    tree = yaml.safe_load(path.read_text())
    tree["select"]["early_stop"] = {"rho": 0.0, "probe": 64}
    path.write_text(yaml.safe_dump(tree))
    assert results.bench_fingerprint(load_bench_config(path)) == off
    tree["select"]["early_stop"] = {"rho": 0.9}
    path.write_text(yaml.safe_dump(tree))
    assert results.bench_fingerprint(load_bench_config(path)) != off
    # The same for selection.length_strata (added while the Multi30k bench ran).
    del tree["select"]["early_stop"]
    assert "length_strata" not in hashed[0][0]["selection"]
    assert "region_edges" in hashed[0][0]["selection"]
    tree["select"].setdefault("selection", {})["length_strata"] = 3
    path.write_text(yaml.safe_dump(tree))
    assert results.bench_fingerprint(load_bench_config(path)) != off


def test_cells_csv_names_n_without_a_full_data_cell(tmp_path):
    # A bench run with full_seeds: [] has no full-data cell; N then comes from the data size a
    # selection run recorded (the CPU Multi30k bench wrote an empty n_train before this).
    from types import SimpleNamespace

    from staff.bench.cells_csv import write_cells_csv

    out = tmp_path / "bench"
    run = out / "select" / "random" / "s0"
    run.mkdir(parents=True)
    (run / "state.json").write_text(json.dumps({"stages": {}, "data": {"n": 4000}}))
    results = {"cells": {"random/p0.90/s0": {"method": "random", "rate": 0.9, "seed": 0,
                                              "loss": 2.5, "n_loss": 500, "n_train": 400}},
               "selection": {"random/s0": {"overhead": 0.1,
                                           "run_dir": "elsewhere/bench/select/random/s0"}}}
    cfg = SimpleNamespace(dataset_name=lambda: "multi30k",
                          select=SimpleNamespace(target=SimpleNamespace(name="tgt")))
    rows = list(csv.DictReader(write_cells_csv(out / "cells.csv", results, cfg).open()))
    assert {r["n_train"] for r in rows} == {"4000"}
    # tables.md's header names the same N (it printed "N = –" before).
    from staff.bench.tables import render
    header = {"cells": results["cells"]}
    assert "N = 4000 training samples" in render(header, ["random"], [0.9], [0], n_train=4000)
    assert "N = – training samples" in render(header, ["random"], [0.9], [0])
    # No state.json to read: the column stays empty rather than guessing.
    (run / "state.json").unlink()
    rows = list(csv.DictReader(write_cells_csv(out / "cells.csv", results, cfg).open()))
    assert {r["n_train"] for r in rows} == {""}


SHIPPED_BENCHES = sorted((Path(__file__).resolve().parents[1] / "configs" / "bench").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_BENCHES, ids=lambda p: p.name)
def test_shipped_bench_configs_load_and_every_method_resolves(path):
    # A typo in a variant or a part costs hours into a bench; loading catches it in seconds.
    from staff.bench import load_bench_config

    cfg = load_bench_config(path)
    for method in cfg.methods:
        run = cfg.selection_config(method, 0, cfg.all_rates())
        assert run.selection.method == method.split(":")[0]
    for part in cfg.parts:
        assert set(part.methods) <= set(cfg.methods), (path.name, part.methods)


def test_publish_copies_a_bench_and_fills_the_length_ratio_of_older_cells(
        tmp_path, translation_files, tiny_model_dir):
    # No training: a bench folder as an older commit left it (a decoded cell without
    # length_ratio, its predictions on disk), published with this code's tables.
    from conftest import load_bench_script

    publish = load_bench_script("publish")
    config = powered_file(tmp_path, translation_files, tiny_model_dir)
    bench = tmp_path / "running"
    eval_dir = bench / "cells" / "staff-noverify" / "p0.75" / "s1" / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "predictions.jsonl").write_text("".join(json.dumps(
        {"id": f"e{i}", "prediction": "a b c", "references": ["a b", "a b c d"],
         "rouge_l": 50.0}) + "\n" for i in range(4)))
    cell = {"method": "staff:noverify", "rate": 0.75, "seed": 1, "protocol": "epochs",
            "loss": 2.0, "n_loss": 6, "rouge_l": 50.0, "bleu": 1.0, "n_eval": 4}
    (bench / "results.json").write_text(json.dumps(
        {"fingerprint": "x", "cells": {"staff:noverify/p0.75/s1": cell,
                                       "random/p0.75/s1": dict(cell, method="random",
                                                               rouge_l=40.0)},
         "selection": {}, "per_example": {}, "runs": []}))
    (bench / "bench.yaml").write_text("resolved: true\n")
    dest = tmp_path / "published"
    written = publish.publish(config, bench, dest)
    assert [p.name for p in written] == ["results.json", "bench.yaml", "tables.md", "cells.csv"]
    copied = json.loads((dest / "results.json").read_text())["cells"]
    assert copied["staff:noverify/p0.75/s1"]["length_ratio"] == 1.0   # 3 words per 3
    assert "length_ratio" not in copied["random/p0.75/s1"]            # no predictions there
    assert "words generated per reference word" in (dest / "tables.md").read_text()
    assert (dest / "bench.yaml").read_text() == "resolved: true\n"
    # The source folder is only read.
    assert "length_ratio" not in (bench / "results.json").read_text()
