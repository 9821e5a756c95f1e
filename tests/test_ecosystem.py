"""The coreset handed on to the tools users train with (issue 18): the Python API takes a
``datasets.Dataset`` and gives the coreset back as one, and TRL's SFTTrainer trains on a
coreset loaded the way the README shows."""

from __future__ import annotations

import json
import math

import pytest

datasets = pytest.importorskip("datasets")


def _tree(tmp_path, small, target):
    return {"small": {"name": small}, "target": {"name": target},
            "data": {"format": "alpaca", "cutoff_len": 64},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "finetune": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
            "selection": {"pruning_rates": [0.5, 0.9], "regions": 4, "verify_per_region": 2},
            "output_dir": str(tmp_path / "run")}


@pytest.fixture()
def rows(alpaca_file):
    return [json.loads(line) for line in alpaca_file.read_text().splitlines()]


def test_python_api_takes_a_dataset_and_gives_the_coreset_back_as_one(tmp_path, rows,
                                                                      tiny_model_dir,
                                                                      tiny_target_dir):
    from staff.pipeline import select

    ds = datasets.Dataset.from_list(rows)
    result = select(_tree(tmp_path, tiny_model_dir, tiny_target_dir), show_progress=False,
                    data=ds)
    coreset = result.coreset(0.5)
    assert isinstance(coreset, datasets.Dataset) and coreset.num_rows == 20
    assert coreset["id"] == result.ids[0.5]
    by_id = {r["id"]: r for r in rows}
    assert all(row == by_id[row["id"]] for row in coreset)
    # The same rows again: every stage is reused (the rows are fingerprinted, not a path).
    again = select(_tree(tmp_path, tiny_model_dir, tiny_target_dir), show_progress=False,
                   data=ds)
    assert again.cached == ["train-small", "score", "verify", "pick"]
    with pytest.raises(ValueError, match="pruning rate 0.7 is not in this result; it has 0.5, 0.9"):
        result.coreset(0.7)


def test_trl_sft_trainer_trains_on_a_coreset(tmp_path, rows, tiny_model_dir):
    """The README's hand-over: datasets.load_dataset("json", ...) on coreset.jsonl, mapped to
    prompt/completion, into TRL's SFTTrainer (a tiny random model, 3 steps)."""
    trl = pytest.importorskip("trl")
    from staff.pipeline import select

    tree = _tree(tmp_path, "unused", "unused")
    tree["selection"] = {"method": "random", "pruning_rates": [0.5]}
    result = select(tree, show_progress=False, data=rows)
    path = result.run_dir / "selections" / "random" / "p0.50" / "coreset.jsonl"
    coreset = datasets.load_dataset("json", data_files=str(path), split="train")
    train = coreset.map(lambda r: {"prompt": f"{r['instruction']}\n\n{r['input']}\n\n",
                                   "completion": r["output"]},
                        remove_columns=coreset.column_names)
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=3,
                         per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                         report_to=[], save_strategy="no", use_cpu=True, bf16=False,
                         dataloader_num_workers=0, seed=0)
    trainer = trl.SFTTrainer(model=tiny_model_dir, args=args, train_dataset=train)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and len(losses) == 3
    assert all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("kind", ["alpaca", "messages", "template"])
def test_export_writes_a_llama_factory_dataset_info_entry(tmp_path, rows, kind):
    from typer.testing import CliRunner

    from staff.cli import app
    from staff.pipeline import select

    tree = _tree(tmp_path, "unused", "unused")
    tree["selection"] = {"method": "random", "pruning_rates": [0.5]}
    if kind == "messages":
        rows = [{"id": r["id"], "messages": [{"role": "user", "content": r["instruction"]},
                                             {"role": "assistant", "content": r["output"]}]}
                for r in rows]
        tree["data"]["format"] = "messages"
    elif kind == "template":
        rows = [{"id": r["id"], "q": r["instruction"], "a": r["output"]} for r in rows]
        tree["data"].update(format="template", prompt_template="Q: {q}\nA:",
                            response_template=" {a}")
    result = select(tree, show_progress=False, data=rows)
    lf = tmp_path / "LLaMA-Factory" / "data"
    lf.mkdir(parents=True)
    (lf / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "x.json"}}))
    res = CliRunner().invoke(app, ["export", str(result.run_dir), "-p", "0.5", "--method",
                                   "random", "--llama-factory", str(lf)])
    assert res.exit_code == 0, res.output
    info = json.loads((lf / "dataset_info.json").read_text())
    assert set(info) == {"alpaca_en_demo", "run_random_p0.50"}  # other entries kept
    entry = info["run_random_p0.50"]
    exported = [json.loads(l) for l in (lf / entry["file_name"]).read_text().splitlines()]
    assert [r["id"] for r in exported] == result.ids[0.5]
    if kind == "alpaca":
        assert entry == {"file_name": "run_random_p0.50.jsonl", "formatting": "alpaca",
                         "columns": {"prompt": "instruction", "query": "input",
                                     "response": "output"}}
    elif kind == "messages":
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages"}
        assert entry["tags"]["role_tag"] == "role" and entry["tags"]["assistant_tag"] == "assistant"
    else:
        first = next(r for r in rows if r["id"] == exported[0]["id"])
        assert exported[0] == {"id": first["id"], "instruction": f"Q: {first['q']}\nA:",
                               "output": f" {first['a']}"}
    res = CliRunner().invoke(app, ["export", str(result.run_dir), "-p", "0.7",
                                   "--llama-factory", str(lf)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "(has 0.5)" in res.output


def test_finetune_on_a_coresets_ids_as_the_readme_shows(tmp_path, rows, alpaca_file,
                                                        tiny_model_dir):
    """`staff finetune -c train.yaml --ids RUN/selections/p0.50/ids.txt`: the next step."""
    import yaml
    from typer.testing import CliRunner

    from staff.cli import app

    tree = _tree(tmp_path, "unused", "unused")
    tree["data"]["path"] = str(alpaca_file)
    tree["selection"] = {"method": "random", "pruning_rates": [0.5]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tree))
    assert CliRunner().invoke(app, ["select", "-c", str(tmp_path / "run.yaml"), "-q"]).exit_code == 0
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(alpaca_file), "cutoff_len": 128}, "model": {"name": tiny_model_dir},
        "lora": {"r": 4, "alpha": 8}, "finetune": {"epochs": 1, "batch_size": 4},
        "output_dir": str(tmp_path / "ft")}))
    ids = tmp_path / "run" / "selections" / "random" / "p0.50" / "ids.txt"
    res = CliRunner().invoke(app, ["finetune", "-c", str(tmp_path / "train.yaml"), "--ids",
                                   str(ids), "-q"])
    assert res.exit_code == 0, res.output
    assert "(20 samples," in res.output and (tmp_path / "ft" / "adapter").is_dir()
