"""End to end on tiny random models: stages, run folder, caching, API and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from staff.config import load_config
from staff.pipeline import Pipeline, load_result
from staff.runs.layout import history_file


def tiny_config(tmp_path, data_file, small, target, **over):
    tree = {
        "data": {"path": str(data_file), "format": "alpaca", "cutoff_len": 64},
        "small": {"name": small}, "target": {"name": target},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "finetune": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
        "scoring": {"batch_size": 8},
        "selection": {"pruning_rates": [0.2, 0.5, 0.7, 0.9], "regions": 6, "verify_per_region": 3},
        "output_dir": str(tmp_path / "run"), "seed": 0,
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            tree[section][name] = value
        else:
            tree[section] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture()
def finished_run(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir):
    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir)
    result = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    return cfg_path, result


def test_end_to_end_exact_sizes_and_run_folder(finished_run):
    cfg_path, result = finished_run
    n = 40
    assert len(result.scores) == n and result.scores["effort"].gt(0).all()
    for p in (0.2, 0.5, 0.7, 0.9):
        m = int(np.floor(n * (1 - p) + 1e-9))
        ids = result.ids[p]
        assert len(ids) == m == len(set(ids))
        folder = result.run_dir / "selections" / f"p{p:.2f}"
        coreset = [json.loads(l) for l in (folder / "coreset.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in coreset) == sorted(ids)
        assert set(coreset[0]) == {"id", "instruction", "input", "output"}  # input's own format
        assert result.regions[p]["selected"].sum() == m
    # The target scored only the verified samples, at most K * b_v.
    assert 0 < len(result.verification) <= 6 * 3
    for name in ("config.yaml", "scores.csv", "verification.csv", "timings.json", "state.json"):
        assert (result.run_dir / name).is_file()
    assert set(result.timings) == {"train-small", "score", "verify", "pick"}
    assert not list(result.run_dir.rglob("*.tmp*"))


def test_rerun_skips_finished_stages_and_new_rates_only_redo_pick(finished_run):
    cfg_path, first = finished_run
    state = json.loads((first.run_dir / "state.json").read_text())["stages"]
    again = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    assert json.loads((first.run_dir / "state.json").read_text())["stages"] == state
    assert again.ids == first.ids
    new = Pipeline(load_config(cfg_path, ["selection.pruning_rates=[0.8]"]),
                   show_progress=False).run_all()
    after = json.loads((first.run_dir / "state.json").read_text())["stages"]
    for stage in ("train-small", "score", "verify"):
        assert after[stage] == state[stage]
    assert after["pick"]["finished_at"] >= state["pick"]["finished_at"]
    assert list(new.ids) == [0.8] and len(new.ids[0.8]) == 8


def test_same_seed_same_ids_across_fresh_runs(tmp_path, alpaca_file, tiny_model_dir,
                                              tiny_target_dir, finished_run):
    _, first = finished_run
    other = tmp_path / "second"
    other.mkdir()
    cfg_path = tiny_config(other, alpaca_file, tiny_model_dir, tiny_target_dir)
    second = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    assert second.ids == first.ids
    np.testing.assert_allclose(second.scores["effort"], first.scores["effort"], rtol=1e-5)


def test_load_result_reads_the_folder(finished_run):
    _, result = finished_run
    again = load_result(result.run_dir)
    assert again.ids == result.ids
    assert again.selection_overhead > 0


def test_cli_select_and_pick(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir):
    from typer.testing import CliRunner

    from staff.cli import app

    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir)
    runner = CliRunner()
    res = runner.invoke(app, ["select", "-c", str(cfg_path), "-q", "-p", "0.5"])
    assert res.exit_code == 0, res.output
    assert "coreset of 20 / 40 samples" in res.output
    res = runner.invoke(app, ["pick", "-c", str(cfg_path), "-q", "-p", "0.75"])
    assert res.exit_code == 0, res.output
    assert "coreset of 10 / 40 samples" in res.output
    # Each coreset's response length against the data's, as scores.csv and ids.txt give it.
    import re

    import pandas as pd

    run = tmp_path / "run"
    scores = pd.read_csv(run / "scores.csv", dtype={"id": str}).set_index("id")
    ids = (run / "selections" / "p0.75" / "ids.txt").read_text().split()
    ratio = scores.loc[ids, "n_response_tokens"].mean() / scores["n_response_tokens"].mean()
    shown = re.search(r"responses (\d\.\d\d)x the data's length \(a random draw: "
                      r"(\d\.\d\d)-(\d\.\d\d)x\)", res.output)
    assert shown, res.output
    assert float(shown.group(1)) == pytest.approx(ratio, abs=0.006)
    assert float(shown.group(2)) < 1.0 < float(shown.group(3))


def test_cli_stage_before_prerequisites_is_a_clear_error(tmp_path, alpaca_file, tiny_model_dir):
    from typer.testing import CliRunner

    from staff.cli import app

    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_model_dir)
    res = CliRunner().invoke(app, ["pick", "-c", str(cfg_path), "-q"])
    assert res.exit_code == 2
    assert "error: stage pick needs stage train-small done" in res.output
    assert "Traceback" not in res.output


def test_cli_help_for_every_command():
    from typer.testing import CliRunner

    from staff.cli import app

    for command in ("select", "train-small", "score", "verify", "pick", "show-config"):
        res = CliRunner().invoke(app, [command, "--help"])
        assert res.exit_code == 0 and "--config" in res.output


def test_regions_larger_than_n_is_an_error(tmp_path, alpaca_file, tiny_model_dir):
    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_model_dir)
    with pytest.raises(ValueError, match="selection.regions == 41, must be <= the number of samples N == 40"):
        Pipeline(load_config(cfg_path, ["selection.regions=41"]), show_progress=False).run_all()


@pytest.mark.parametrize("method", ["random", "grand", "el2n", "ccs", "d2"])
def test_baselines_run_in_one_folder_and_share_the_tuned_target(tmp_path, alpaca_file,
                                                                 tiny_model_dir, method):
    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_model_dir)
    over = [f"selection.method={method}", "selection.ccs_strata=5"]
    result = Pipeline(load_config(cfg_path, over), show_progress=False).run_all()
    for p, m in ((0.2, 32), (0.5, 20), (0.7, 12), (0.9, 4)):
        assert len(result.ids[p]) == m == len(set(result.ids[p]))
    expected = {"pick"} if method == "random" else {"train-target", "score-target", "pick"}
    assert set(result.timings) == expected and result.method == method
    if method != "random":
        scores = result.scores.set_index("id")
        if method == "el2n":  # keeps the highest EL2N on the fine-tuned target
            top = scores["el2n"].sort_values(ascending=False).index[:4]
            assert set(result.ids[0.9]) == set(top)
        if method == "grand":
            top = scores["effort"].sort_values(ascending=False).index[:4]
            assert set(result.ids[0.9]) == set(top)
        # A second baseline in the same folder reuses the fine-tuned, scored target.
        state = json.loads((result.run_dir / "state.json").read_text())["stages"]
        other = "ccs" if method != "ccs" else "el2n"
        Pipeline(load_config(cfg_path, [f"selection.method={other}", "selection.ccs_strata=5"]),
                 show_progress=False).run_all()
        again = json.loads((result.run_dir / "state.json").read_text())["stages"]
        assert again["score-target"] == state["score-target"]


@pytest.mark.parametrize("ablation", [["selection.verify=false"],
                                      ["selection.speculative=untuned-target"],
                                      ["selection.score=el2n"], ["selection.score=loss"]])
def test_staff_ablations(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir, ablation):
    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir)
    result = Pipeline(load_config(cfg_path, ablation), show_progress=False).run_all()
    assert [len(result.ids[p]) for p in (0.2, 0.5, 0.7, 0.9)] == [32, 20, 12, 4]
    if ablation == ["selection.verify=false"]:
        assert len(result.verification) == 0
        assert (result.regions[0.5]["factor"] == 1.0).all()
    elif ablation == ["selection.speculative=untuned-target"]:
        assert "train-small" not in result.timings
    else:
        score = ablation[0].split("=")[1]
        assert f"target_{score}" in result.verification.columns


def test_pick_from_stored_scores_reads_no_rows(finished_run, monkeypatch):
    """New pruning rates come from the stored scores; the data is neither parsed nor formatted
    again (a million rows cost more than the whole pick), and the coreset holds the source's
    own lines."""
    import staff.data

    cfg_path, first = finished_run

    def refuse(*args, **kwargs):
        raise AssertionError("pick parsed the data again")

    monkeypatch.setattr(staff.data, "load_rows", refuse)
    monkeypatch.setattr(staff.data, "to_examples", refuse)
    again = Pipeline(load_config(cfg_path, ["selection.pruning_rates=[0.5,0.75]"]),
                     show_progress=False).run_all()
    assert again.ids[0.5] == first.ids[0.5] and len(again.ids[0.75]) == 10
    source = dict(zip([json.loads(l)["id"] for l in open(cfg_path.parent / "train.jsonl")],
                      open(cfg_path.parent / "train.jsonl").read().splitlines()))
    coreset = (first.run_dir / "selections" / "p0.75" / "coreset.jsonl").read_text().splitlines()
    assert sorted(coreset) == sorted(source[i] for i in again.ids[0.75])


def test_changed_data_file_redoes_every_stage(finished_run):
    cfg_path, first = finished_run
    state_file = first.run_dir / "state.json"
    before = json.loads(state_file.read_text())
    assert before["data"]["n"] == 40
    data = cfg_path.parent / "train.jsonl"
    rows = [json.loads(l) for l in data.read_text().splitlines()]
    rows[3]["output"] = "changed"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    Pipeline(load_config(cfg_path), show_progress=False).run_all()
    after = json.loads(state_file.read_text())
    for stage in ("train-small", "score", "verify", "pick"):
        assert after["stages"][stage]["fingerprint"] != before["stages"][stage]["fingerprint"]
    assert after["data"]["fingerprint"] != before["data"]["fingerprint"]


def test_early_stop_ends_stage_1_when_effort_settles_and_is_in_its_fingerprint(
        finished_run, tmp_path):
    """early_stop.rho > 0 stops train-small at a check (the tiny model's probe ranks barely
    move, so at the first comparison), records where, and redoes stage 1 of a run made
    without it; off, the fingerprint is the one of runs made before the option."""
    cfg_path, plain = finished_run
    before = json.loads((plain.run_dir / "state.json").read_text())["stages"]
    cfg = load_config(cfg_path, ["early_stop.rho=0.5", "early_stop.every=0.4",
                                 "early_stop.probe=16"])
    stopped = Pipeline(cfg, show_progress=False).run_all()
    stages = json.loads((stopped.run_dir / "state.json").read_text())["stages"]
    train = stages["train-small"]
    assert train["fingerprint"] != before["train-small"]["fingerprint"]
    # 40 samples, batch 8: 5 steps an epoch; a check every 2 steps, the first compared at 4.
    assert train["stopped_early_at"] == train["steps"] == 4
    assert train["settle_rho"][0] is None and train["settle_rho"][1] >= 0.5
    history = json.loads((stopped.run_dir / history_file("small")).read_text())
    assert history["stopped_early_at"] == 4 and len(history["loss"]) == 4
    assert all(len(ids) for ids in stopped.ids.values())
    # Off again: stage 1 is the first run's, fingerprint and all (nothing redone).
    assert Pipeline(load_config(cfg_path), show_progress=False).fingerprints()["train-small"] \
        == before["train-small"]["fingerprint"]
