"""A bench carried from one machine to the next (staff.bench.archive, bench/publish.py,
``resume_from``), on the tiny random Llama of conftest."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import load_bench_script
from test_bench import bench_file, translation_files  # noqa: F401 - a fixture


def _count_finetuning(monkeypatch) -> list[int]:
    """The number of samples of every LoRA fine-tuning from now on."""
    import staff.training.lora as lora_module

    calls = []
    real = lora_module.finetune_lora
    monkeypatch.setattr(lora_module, "finetune_lora",
                        lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    return calls


def _bench(folder, files, model_dir, seeds, **extra):
    path = bench_file(folder, files, model_dir, methods=("staff", "random"), rates=(0.5,))
    tree = yaml.safe_load(path.read_text())
    tree.update(seeds=list(seeds), stage1_seed=0, full_seeds=[0], **extra)
    path.write_text(yaml.safe_dump(tree))
    return path


def _published_one_seed(tmp_path, files, model_dir):
    """A seed-0 bench run in tmp_path/a, published to tmp_path/repo (returned)."""
    from staff.bench import Grid, load_bench_config

    first, repo = tmp_path / "a", tmp_path / "repo"
    first.mkdir()
    config = _bench(first, files, model_dir, seeds=(0,))
    Grid(load_bench_config(config), show_progress=False).run()
    load_bench_script("publish").publish(config, first / "bench", repo)
    return repo


def test_a_published_bench_resumes_on_a_machine_without_its_folder(
        tmp_path, translation_files, tiny_model_dir, monkeypatch):
    from staff.bench import Grid, load_bench_config

    publish = load_bench_script("publish")
    first, repo = tmp_path / "machine-a", tmp_path / "repo" / "results"
    first.mkdir()
    config = _bench(first, translation_files, tiny_model_dir, seeds=(0, 1))
    measured = Grid(load_bench_config(config), show_progress=False).run()
    publish.publish(config, first / "bench", repo)

    # The archive: every selection run, with its scores and state but no weights or data rows.
    runs = sorted(p.relative_to(repo).as_posix() for p in (repo / "select").glob("*/s*"))
    assert runs == ["select/random/s0", "select/random/s1", "select/staff/s0", "select/staff/s1"]
    assert (repo / "select/staff/s0/scores.csv").is_file()
    assert (repo / "select/staff/s1/verification.csv").is_file()
    assert (repo / "select/staff/s0/selections/p0.50/ids.txt").is_file()
    kept = [p.name for p in repo.rglob("*")]
    assert "small_adapter" not in kept and "coreset.jsonl" not in kept
    assert (first / "bench/select/staff/s0/small_adapter").is_dir()  # the source is untouched

    # Machine B: no bench folder; the same config with resume_from. Nothing is trained again.
    second = tmp_path / "machine-b"
    second.mkdir()
    config_b = _bench(second, translation_files, tiny_model_dir, seeds=(0, 1),
                      resume_from=str(repo))
    calls = _count_finetuning(monkeypatch)
    again = Grid(load_bench_config(config_b), show_progress=False).run()
    assert calls == []
    assert {k: v["loss"] for k, v in again["cells"].items()} == {
        k: v["loss"] for k, v in measured["cells"].items()}
    assert not (second / "bench" / "cells").exists() or not any(
        (second / "bench" / "cells").rglob("adapter"))

    # A third seed there: its stage 1 comes from the restored seed 0 (no weights needed), so
    # only its two coresets are fine-tuned, not the full data.
    config_b = _bench(second, translation_files, tiny_model_dir, seeds=(0, 1, 2),
                      resume_from=str(repo))
    again = Grid(load_bench_config(config_b), show_progress=False).run()
    assert sorted(calls) == [20, 20]
    state = json.loads((second / "bench/select/staff/s2/state.json").read_text())
    assert state["stages"]["score"]["adopted_from"].endswith("staff/s0 (score)")
    assert not (second / "bench/select/staff/s2/small_adapter").exists()
    assert {"staff/p0.50/s2", "random/p0.50/s2", "staff/p0.50/s0"} <= set(again["cells"])

    # Publishing machine B's folder keeps what only the repository had, and adds seed 2.
    publish.publish(config_b, second / "bench", repo)
    cells = json.loads((repo / "results.json").read_text())["cells"]
    assert {"staff/p0.50/s1", "staff/p0.50/s2", "full/s0", "untuned"} <= set(cells)
    assert (repo / "select/staff/s2/verification.csv").is_file()


def test_a_recorded_cell_of_other_inputs_is_trained_again(tmp_path, translation_files,
                                                          tiny_model_dir, monkeypatch):
    from staff.bench import Grid, load_bench_config

    repo = _published_one_seed(tmp_path, translation_files, tiny_model_dir)
    stored = json.loads((repo / "results.json").read_text())
    stored["cells"]["random/p0.50/s0"]["train_fingerprint"] = "0" * 16  # made another way
    (repo / "results.json").write_text(json.dumps(stored))

    second = tmp_path / "b"
    second.mkdir()
    calls = _count_finetuning(monkeypatch)
    Grid(load_bench_config(_bench(second, translation_files, tiny_model_dir, seeds=(0,),
                                  resume_from=str(repo))), show_progress=False).run()
    assert calls == [20]  # that cell only


def test_a_restored_run_redoes_the_fine_tuning_a_redone_score_needs(tmp_path, translation_files,
                                                                     tiny_model_dir, monkeypatch):
    """A run folder without its adapter (as an archive keeps it): a changed scoring option
    redoes score, which reads the adapter, so train-small is redone first instead of failing."""
    from staff.bench import load_bench_config
    from staff.pipeline import select

    cfg = load_bench_config(_bench(tmp_path, translation_files, tiny_model_dir, seeds=(0,)))
    run_cfg = cfg.selection_config("staff", 0, [0.5])
    first = select(run_cfg, show_progress=False)
    shutil.rmtree(first.run_dir / "small_adapter")
    calls = _count_finetuning(monkeypatch)
    same = select(run_cfg, show_progress=False)  # nothing to redo: the adapter is not needed
    assert calls == [] and same.ids == first.ids

    import dataclasses
    rescored = dataclasses.replace(run_cfg, scoring=dataclasses.replace(run_cfg.scoring,
                                                                        batch_size=4))
    again = select(rescored, show_progress=False)
    assert calls == [40]
    assert (again.run_dir / "small_adapter").is_dir()


def test_tables_of_a_fresh_folder_name_n_from_the_published_copy(tmp_path, translation_files,
                                                                  tiny_model_dir):
    # `staff bench --tables-only` on a machine without the bench folder: no full-data cell in
    # the copy and no selection run here, so N comes from the copy's select/ (it printed
    # "N = –" before).
    from staff.bench import Grid, load_bench_config

    repo = _published_one_seed(tmp_path, translation_files, tiny_model_dir)
    stored = json.loads((repo / "results.json").read_text())
    n = stored["cells"].pop("full/s0")["n_train"]
    (repo / "results.json").write_text(json.dumps(stored))

    second = tmp_path / "b"
    second.mkdir()
    grid = Grid(load_bench_config(_bench(second, translation_files, tiny_model_dir, seeds=(0,),
                                         resume_from=str(repo))), show_progress=False)
    tables = grid.write_tables().read_text()
    assert not (second / "bench" / "select").exists()
    assert f"N = {n} training samples" in tables
    rows = (second / "bench" / "cells.csv").read_text().splitlines()
    assert all(f",{n}," in row for row in rows[1:]) and len(rows) > 1


def test_a_variant_first_run_on_a_fresh_machine_takes_stage_1_from_the_archive(
        tmp_path, translation_files, tiny_model_dir, monkeypatch):
    # The archive holds STAFF's selection run; a variant never run before must take its
    # stage 1 from it (restoring the donor), not fine-tune the full data again.
    from staff.bench import Grid, load_bench_config

    repo = _published_one_seed(tmp_path, translation_files, tiny_model_dir)
    second = tmp_path / "b"
    second.mkdir()
    config = _bench(second, translation_files, tiny_model_dir, seeds=(0,),
                    resume_from=str(repo),
                    variants={"count": {"selection": {"region_edges": "equal-count"}}})
    tree = yaml.safe_load(config.read_text())
    tree["methods"] = ["staff:count"]  # alone: no STAFF cell restores the donor first
    config.write_text(yaml.safe_dump(tree))
    calls = _count_finetuning(monkeypatch)
    results = Grid(load_bench_config(config), show_progress=False).run()
    assert calls == [20]  # the variant's coreset only, not the full data (40)
    state = json.loads((second / "bench/select/staff-count/s0/state.json").read_text())
    assert state["stages"]["score"]["adopted_from"].endswith("staff/s0 (score)")
    assert "staff:count/p0.50/s0" in results["cells"]


def test_a_variant_of_a_draft_takes_stage_1_from_another_variant_of_that_draft(
        tmp_path, translation_files, tiny_model_dir, monkeypatch):
    # Two variants with their own small model (a draft, here a copy of the tiny model in
    # another folder): STAFF's stage 1 is not theirs (another small model), but the second
    # variant's is the first one's, archived under another seed.
    from staff.bench import Grid, load_bench_config

    draft = tmp_path / "draft"
    shutil.copytree(tiny_model_dir, draft)
    config = _bench(tmp_path, translation_files, tiny_model_dir, seeds=(0, 1),
                    variants={"draft": {"small": {"name": str(draft)}},
                              "draftprune": {"small": {"name": str(draft)},
                                             "selection": {"hard_prune": 0.1}}})
    tree = yaml.safe_load(config.read_text())
    tree["methods"] = ["staff:draft", "staff:draftprune"]
    config.write_text(yaml.safe_dump(tree))
    calls = _count_finetuning(monkeypatch)
    grid = Grid(load_bench_config(config, ["methods=[staff:draft]", "seeds=[1]", "full_seeds=[]"]),
                show_progress=False)
    grid.run()
    assert calls == [40, 20]  # the draft's stage 1 on the full data, then its coreset
    calls.clear()
    Grid(load_bench_config(config, ["methods=[staff:draftprune]", "seeds=[0]", "full_seeds=[]"]),
         show_progress=False).run()
    assert calls == [20]  # the coreset only: stage 1 is staff:draft's (seed 1's folder)
    state = json.loads((tmp_path / "bench/select/staff-draftprune/s0/state.json").read_text())
    assert state["stages"]["score"]["adopted_from"].endswith("staff-draft/s1 (score)")


def test_cells_record_library_versions_and_tables_warn_when_they_differ(
        tmp_path, translation_files, tiny_model_dir):
    import transformers

    from staff.bench import load_bench_config
    from staff.bench.grid import write_tables

    repo = _published_one_seed(tmp_path, translation_files, tiny_model_dir)
    results = json.loads((repo / "results.json").read_text())
    versions = {e["libraries"]["transformers"] for e in results["cells"].values()}
    assert versions == {transformers.__version__}
    cfg = load_bench_config(_bench(tmp_path, translation_files, tiny_model_dir, seeds=(0,)))
    out = tmp_path / "tables"
    out.mkdir()
    write_tables(results, cfg, out, source=tmp_path / "a" / "bench")
    assert "Warning" not in (out / "tables.md").read_text()

    results["cells"]["random/p0.50/s0"]["libraries"]["transformers"] = "5.17.0"  # another machine
    write_tables(results, cfg, out, source=tmp_path / "a" / "bench")
    first = (out / "tables.md").read_text().splitlines()[0]
    assert first.startswith("**Warning") and f"transformers 5.17.0, {transformers.__version__}" in first


def _baselines_bench(folder, files, model_dir, methods, seeds, **extra):
    path = _bench(folder, files, model_dir, seeds=seeds, **extra)
    tree = yaml.safe_load(path.read_text())
    tree.update(methods=list(methods), full_seeds=[])
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_baseline_seed_takes_the_archived_stage_1_of_another_seed_and_d2_redoes_its_embeddings(
        tmp_path, translation_files, tiny_model_dir, monkeypatch):
    # Stage 1 held fixed: the baselines' train-target and score-target are the same for every
    # seed. The archive holds them under seed 2 only (the seed that ran first); CCS at seed 0 on
    # a fresh machine takes them from there instead of fine-tuning the full data (40 samples)
    # again. D2 reads the embeddings, which no archive keeps: it redoes the target's stage 1
    # rather than fail on a missing file.
    from staff.bench import Grid, load_bench_config

    first, repo = tmp_path / "a", tmp_path / "repo"
    first.mkdir()
    config = _baselines_bench(first, translation_files, tiny_model_dir, ["ccs"], seeds=(2,))
    Grid(load_bench_config(config), show_progress=False).run()
    load_bench_script("publish").publish(config, first / "bench", repo)
    assert (repo / "select/baselines/s2/target_scores.csv").is_file()
    assert not list((repo / "select").rglob("*.npy"))

    second = tmp_path / "b"
    second.mkdir()
    calls = _count_finetuning(monkeypatch)
    config = _baselines_bench(second, translation_files, tiny_model_dir, ["ccs"], seeds=(0,),
                              resume_from=str(repo))
    results = Grid(load_bench_config(config), show_progress=False).run()
    assert calls == [20]  # the coreset only
    state = json.loads((second / "bench/select/baselines/s0/state.json").read_text())
    assert state["stages"]["score-target"]["adopted_from"].endswith("baselines/s2 (score-target)")
    assert "ccs/p0.50/s0" in results["cells"]

    calls.clear()
    config = _baselines_bench(second, translation_files, tiny_model_dir, ["d2"], seeds=(0,),
                              resume_from=str(repo))
    results = Grid(load_bench_config(config), show_progress=False).run()
    assert calls == [40, 20]  # train-target again (its adapter is not archived), then the coreset
    assert (second / "bench/select/baselines/s0/target_embeddings.npy").is_file()
    assert "d2/p0.50/s0" in results["cells"]


def test_a_variant_whose_draft_is_missing_names_the_variant(tmp_path, translation_files,
                                                              tiny_model_dir):
    # The powered configs' draft variants point at `staff draft` folders a fresh machine has
    # not built: the error says which variant and how to build it, not only the path.
    from staff.bench import Grid, load_bench_config
    from staff.models.loading import ModelError

    config = _bench(tmp_path, translation_files, tiny_model_dir, seeds=(0,),
                    variants={"draft": {"small": {"name": str(tmp_path / "no" / "draft")}}})
    tree = yaml.safe_load(config.read_text())
    tree["methods"] = ["staff:draft"]
    config.write_text(yaml.safe_dump(tree))
    grid = Grid(load_bench_config(config, ["full_seeds=[]"]), show_progress=False)
    with pytest.raises(ModelError, match=r"^staff:draft: variants\.draft\.small\.name: model path "
                       r".*no/draft does not exist\. \(a draft is built with `staff draft"):
        grid.run()


def test_publishing_skips_a_selection_run_that_another_process_is_running(
        tmp_path, translation_files, tiny_model_dir, caplog):
    """A run folder a bench process is in may be mid-stage (a redone stage is not recorded as
    done): the archive keeps its earlier, finished copy instead of taking the half-state."""
    from staff.bench.archive import turn_lock

    repo = _published_one_seed(tmp_path, translation_files, tiny_model_dir)
    archived = (repo / "select/staff/s0/state.json").read_text()
    run = tmp_path / "a" / "bench" / "select" / "staff" / "s0"
    config = tmp_path / "a" / "bench.yaml"
    with turn_lock(run):                    # as a bench process in that selection holds it
        (run / "state.json").write_text(json.dumps({"stages": {}}))
        load_bench_script("publish").publish(config, tmp_path / "a" / "bench", repo)
    assert (repo / "select/staff/s0/state.json").read_text() == archived
    assert "not archived this time" in caplog.text and "staff/s0 is in use" in caplog.text
    # Free again, but without the stages its archived copy has done (a run killed while it was
    # redoing them, as D2 at Multi30k seed 1 was): the archive still keeps the finished copy.
    caplog.clear()
    load_bench_script("publish").publish(config, tmp_path / "a" / "bench", repo)
    assert (repo / "select/staff/s0/state.json").read_text() == archived
    assert "has not (yet) done pick, score, train-small, verify" in caplog.text
    # Once every stage is done again, it is archived as it is.
    redone = json.loads(archived)
    redone["stages"]["score"]["seconds"] = 123.0
    (run / "state.json").write_text(json.dumps(redone))
    load_bench_script("publish").publish(config, tmp_path / "a" / "bench", repo)
    assert json.loads((repo / "select/staff/s0/state.json").read_text()) == redone
