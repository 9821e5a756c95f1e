"""What a new user meets in the first hour (issue 18): several methods in one run folder, a
report for every run, new rates beside old ones, re-runs that say what was cached, and reports
that explain the method's surprises in place."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from staff.cli import app
from staff.config import load_config
from staff.pipeline import Pipeline
from test_pipeline import tiny_config


def _with_notes(path):
    """The alpaca fixture with the demo's planted flags: 4 wrong answers, 4 duplicates."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["note"] = "wrong_answer" if i % 10 == 3 else "duplicate" if i % 10 == 7 else ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def staff_run(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir):
    cfg_path = tiny_config(tmp_path, _with_notes(alpaca_file), tiny_model_dir, tiny_target_dir,
                           selection__pruning_rates=[0.5, 0.7])
    result = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    return cfg_path, result


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_random_in_a_staff_folder_keeps_staffs_coresets_and_both_get_reports(staff_run):
    cfg_path, first = staff_run
    run = first.run_dir
    staff_files = {k: v for k, v in _files(run / "selections").items() if "/" in k
                   and not k.startswith("random/")}
    assert "p0.50/regions.csv" in staff_files
    res = CliRunner().invoke(app, ["select", "-c", str(cfg_path), "-q", "--method", "random"])
    assert res.exit_code == 0, res.output
    assert f"{run}/selections/random/p0.50/coreset.jsonl" in res.output
    after = _files(run / "selections")
    assert {k: after[k] for k in staff_files} == staff_files  # STAFF's coresets untouched
    assert len((run / "selections/random/p0.50/ids.txt").read_text().split()) == 20
    assert (run / "report.html").is_file() and (run / "report-random.html").is_file()
    assert "random selection report" in (run / "report-random.html").read_text()
    res = CliRunner().invoke(app, ["report", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.split() == [str(run / "report.html"), str(run / "report-random.html")]


def test_random_in_a_fresh_folder_works_and_gets_a_report(tmp_path, alpaca_file):
    cfg_path = tiny_config(tmp_path, alpaca_file, "no-such-org/no-model", "no-such-org/no-model",
                           selection__method="random")
    res = CliRunner().invoke(app, ["select", "-c", str(cfg_path), "-q"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    page = (run / "report-random.html").read_text()
    assert "selections/random/p0.90/coreset.jsonl" in page
    res = CliRunner().invoke(app, ["report", str(run), "-q"])
    assert res.exit_code == 0 and res.output.strip() == str(run / "report-random.html")


def test_new_rates_keep_the_old_ones_listed_and_reported(staff_run):
    cfg_path, first = staff_run
    run = first.run_dir
    res = CliRunner().invoke(app, ["pick", "-c", str(cfg_path), "-q", "-p", "0.8"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "selections" / "summary.json").read_text())
    assert list(summary) == ["p0.50", "p0.70", "p0.80"]
    assert all(info["current"] for info in summary.values())
    page = (run / "report.html").read_text()
    for p in ("p0.50", "p0.70", "p0.80"):
        assert f"selections/{p}/coreset.jsonl" in page
    # Other options make the earlier coresets stale: still listed, marked as such.
    res = CliRunner().invoke(app, ["pick", "-c", str(cfg_path), "-q", "-p", "0.8",
                                   "--set", "selection.within_region=top"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "selections" / "summary.json").read_text())
    assert {k: v["current"] for k, v in summary.items()} == {
        "p0.50": False, "p0.70": False, "p0.80": True}
    assert "2 coreset(s) on disk come from an earlier pick" in (run / "report.html").read_text()


def test_a_rerun_says_what_was_cached(staff_run):
    cfg_path, _ = staff_run
    res = CliRunner().invoke(app, ["select", "-c", str(cfg_path), "-q"])
    assert res.exit_code == 0, res.output
    assert "stage times" not in res.output
    assert ("cached (done before with the same inputs, not redone): train-small, score, "
            "verify, pick") in res.output
    assert "when first run (timings.json)" in res.output
    res = CliRunner().invoke(app, ["pick", "-c", str(cfg_path), "-q", "-p", "0.6"])
    assert "stage times: pick " in res.output
    assert "cached (done before with the same inputs, not redone): train-small, score, verify" \
        in res.output


def test_report_counts_flagged_rows_against_a_random_draw(staff_run):
    _, result = staff_run
    page = (result.run_dir / "report.html").read_text()
    assert "Flagged rows kept" in page
    ids = set(result.ids[0.5])
    wrong = {f"s{i}" for i in range(40) if i % 10 == 3}
    kept = len(ids & wrong)
    # 4 wrong answers in 40 rows; a random draw of 20 keeps 2.0 on average.
    assert f"<td>0.50</td><td>wrong_answer</td><td>4</td><td>{kept}</td><td>2.0</td>" in page


def test_report_explains_a_dense_high_v_region_with_no_samples_and_low_rho(tmp_path):
    from staff.report import build_report
    from test_report import make_run

    run = make_run(tmp_path / "run")
    v = pd.read_csv(run / "verification.csv")
    v["target_effort"] = -v["small_effort"]  # the small model ranks the other way round
    v.to_csv(run / "verification.csv", index=False)
    table = pd.read_csv(run / "selections" / "p0.50" / "regions.csv")
    table = table.sort_values("size", kind="stable").reset_index(drop=True)  # visit order
    last = len(table) - 1
    table.loc[last, "factor"] = table["factor"].max() + 1.0
    table.loc[last, ["budget", "selected"]] = 0
    table.to_csv(run / "selections" / "p0.50" / "regions.csv", index=False)
    page = build_report(run).read_text()
    region = int(table.loc[last, "region"])
    assert (f"0 samples from region {region} (the densest region and the highest V_i "
            f"({table.loc[last, 'factor']:.3f})") in page
    assert "visits regions in order of size, fewest samples first" in page
    assert "barely predict the target" in page and "is -1.00" in page


def test_low_agreement_is_a_warning_in_the_log(caplog):
    import logging

    from staff.stages.verify import _warn_if_low_agreement

    with caplog.at_level(logging.WARNING, logger="staff.pipeline"):
        _warn_if_low_agreement(np.arange(10.0), np.arange(10.0))
        assert caplog.text == ""
        _warn_if_low_agreement(np.arange(10.0), -np.arange(10.0))
    assert "Spearman's ρ between small and target scores on the verified samples is -1.00" \
        in caplog.text


def test_show_config_without_a_file_prints_the_library_defaults():
    import yaml

    res = CliRunner().invoke(app, ["show-config"])
    assert res.exit_code == 0, res.output
    tree = yaml.safe_load(res.output)
    assert tree["finetune"]["epochs"] == 3 and tree["data"]["cutoff_len"] == 512
    assert tree["selection"]["regions"] is None  # scaled to N unless set
    assert "# Epochs T of LoRA fine-tuning" in res.output
    demo = yaml.safe_load(CliRunner().invoke(app, ["show-config", "--demo"]).output)
    assert demo["finetune"]["epochs"] == 2 and demo["selection"]["regions"] == 10


def test_regions_and_verification_scale_to_n_by_the_stated_rule():
    from staff.selection.base import auto_sizes

    assert auto_sizes(20) == (1, 2)
    assert auto_sizes(200) == (10, 2)        # 20 samples on the target: 10 %, not 48 %
    assert auto_sizes(2000) == (50, 4)
    assert auto_sizes(5000) == auto_sizes(10**6) == (50, 10)   # the paper's K and b_v
    for n in (1, 7, 20, 99, 200, 1234, 4999, 5000, 123456):
        k, b = auto_sizes(n)
        assert 1 <= k <= max(1, n) and (k * b <= max(n // 10, k) or b == 1)


def test_twenty_rows_with_default_sizes_run(tmp_path, alpaca_file, tiny_model_dir, caplog):
    import logging

    import yaml

    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_model_dir,
                           selection={"pruning_rates": [0.5]}, data__max_samples=20)
    with caplog.at_level(logging.INFO, logger="staff.selection.base"):
        result = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    assert len(result.ids[0.5]) == 10 and len(result.verification) == 2
    assert ("selection.regions = 1, selection.verify_per_region = 2: scaled to N = 20 by "
            "K = min(50, max(1, N // 20))") in caplog.text
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["selection"]
    assert (saved["regions"], saved["verify_per_region"]) == (1, 2)


def test_relative_data_path_is_read_from_the_yaml_folder(tmp_path, alpaca_file, monkeypatch):
    import yaml

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "train.jsonl").write_bytes(alpaca_file.read_bytes())
    (folder / "run.yaml").write_text(yaml.safe_dump({
        "data": {"path": "data/train.jsonl"}, "small": {"name": "s"}, "target": {"name": "t"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../project/configs/run.yaml")
    assert cfg.data.path == str(folder / "data" / "train.jsonl")
    # An override is the user's own typing: read from the working directory.
    assert load_config("../project/configs/run.yaml", ["data.path=x.jsonl"]).data.path == "x.jsonl"
    (folder / "hub.yaml").write_text(yaml.safe_dump({
        "data": {"path": "knkarthick/dialogsum"}, "small": {"name": "s"}, "target": {"name": "t"}}))
    assert load_config("../project/configs/hub.yaml").data.path == "knkarthick/dialogsum"


def test_an_unknown_hub_target_fails_before_any_work_in_one_line(tmp_path, alpaca_file,
                                                                  tiny_model_dir):
    import time

    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, "no-such-org/no-such-model")
    started = time.perf_counter()
    res = CliRunner().invoke(app, ["select", "-c", str(cfg_path), "-q"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith(
        "error: target.name no-such-org/no-such-model: ")
    assert time.perf_counter() - started < 30  # one request, no retries, no fine-tuning
    assert not (tmp_path / "run" / "small_adapter").exists()


def test_a_target_without_chat_template_fails_before_any_work_naming_it(tmp_path, alpaca_file,
                                                                       tiny_model_dir):
    import shutil

    target = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    (target / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, str(target),
                           data__chat_template=True)
    res = CliRunner().invoke(app, ["select", "-c", str(cfg_path), "-q"])
    assert res.exit_code == 2, res.output
    assert res.output == (f"error: data.chat_template is true but the tokenizer of {target} "
                          "has no chat template\n")
    assert not (tmp_path / "run" / "small_adapter").exists()


def test_quiet_silences_the_gguf_conversion_bar_and_peft_warns_no_deprecation(tmp_path):
    import subprocess
    import sys

    code = ("from staff.cli import _setup_logging; _setup_logging(True)\n"
            "from transformers.modeling_gguf_pytorch_utils import tqdm\n"
            "list(tqdm(range(3), desc='Converting and de-quantizing GGUF tensors...'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "Converting" not in out.stderr, out.stderr


def test_wrapping_a_model_with_lora_warns_nothing(tiny_model_dir, recwarn):
    import torch

    from staff.config import LoraConfig, ModelConfig
    from staff.models.adapters import attach_lora
    from staff.models.loading import load_model

    attach_lora(load_model(ModelConfig(name=tiny_model_dir), torch.device("cpu")), LoraConfig(), 0)
    assert not [w for w in recwarn if "checkpointing" in str(w.message)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_ids_txt_lines_up_with_coreset_rows_which_carry_their_ids(tmp_path, alpaca_file,
                                                                  suffix):
    rows = [json.loads(line) for line in alpaca_file.read_text().splitlines()]
    for row in rows[::2]:
        del row["id"]  # every other row without an id: it gets its 1-based row number
    data = tmp_path / f"mixed{suffix}"
    if suffix == ".csv":
        pd.DataFrame(rows).fillna("").to_csv(data, index=False)
    else:
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg_path = tiny_config(tmp_path, data, "unused", "unused", selection__method="random")
    result = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    folder = result.run_dir / "selections" / "random" / "p0.50"
    ids = (folder / "ids.txt").read_text().splitlines()
    coreset = [json.loads(line) for line in (folder / "coreset.jsonl").read_text().splitlines()]
    assert ids == [str(r["id"]) for r in coreset] == result.ids[0.5]
    expected = {str(i + 1) if "id" not in r else r["id"]: r for i, r in enumerate(rows)}
    for sid, row in zip(ids, coreset):
        assert {k: str(v) for k, v in row.items() if k != "id"} == \
            {k: str(v) for k, v in expected[sid].items() if k != "id"}
    assert any(i.isdigit() for i in ids) and any(i.startswith("s") for i in ids)
