"""Issue 16, part B: bad input and faults. Every bad option is a one-line error (exit 2) before
the run folder is touched, even on a finished run; a killed pick leaves whole rate folders; a
full disk while checkpointing is one line and resumable; a second run on a locked folder is
told who holds it; score shards of another shard size are not reused; huge rows cost memory
in proportion to cutoff_len.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_reliability import (assert_one_line_error, child_env, copy_run, edge_run,  # noqa: F401
                              jsonl, partial_files, read_ids, staff)


def snapshot(run: Path) -> dict[str, str]:
    """Every file of a run folder (but the lock's own two) with a hash of its bytes."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and not p.name.startswith(".lock")}


# ----------------------------------------------------------------------------- bad options

def _bad_options(tmp: Path, tiny_target_dir: str) -> list[tuple[list, str]]:
    weightless = tmp / "no-weights"
    shutil.copytree(tiny_target_dir, weightless)
    for path in weightless.glob("*.safetensors"):
        path.unlink()
    a_file = tmp / "model.txt"
    a_file.write_text("not a model")
    cases = [
        (["--set", "finetune.learning_rate=-1"], "finetune.learning_rate == -1.0, must be > 0."),
        (["--set", "finetune.learning_rate=0"], "finetune.learning_rate == 0.0, must be > 0."),
        (["--seed", "-1"], "seed == -1, must be in [0, 2**63 - 1]."),
        (["--set", f"seed={2**70}"], f"seed == {2**70}, must be in [0, 2**63 - 1]."),
        (["--set", "lora.alpha=0"], "lora.alpha == 0, must be > 0."),
        (["--set", "lora.target_modules=[]"], "lora.target_modules == [], must be "
         "'all-linear', a module name, or a non-empty list of module names."),
        (["--set", "lora.target_modules=[nosuch]"], "lora.target_modules has 'nosuch', which "
         "is no module of {small}; its linear layers: down_proj, gate_proj, k_proj, lm_head, "
         "o_proj, q_proj, up_proj, v_proj."),
        (["--set", "finetune.max_grad_norm=-1"], "finetune.max_grad_norm == -1.0, must be >= 0 "
         "(0 disables clipping)."),
        (["--set", "finetune.weight_decay=-0.1"], "finetune.weight_decay == -0.1, must be >= 0."),
        (["--set", "selection.hard_prune=0.99"], "selection.hard_prune == 0.99 leaves 1 of 24 "
         "samples, fewer than the coreset of 12 at pruning rate 0.5: it must be <= that rate."),
        (["-m", "ccs", "--set", "selection.ccs_hard_cutoff=0.7"], "selection.ccs_hard_cutoff "
         "== 0.7 leaves 8 of 24 samples, fewer than the coreset of 12 at pruning rate 0.5: it "
         "must be <= that rate."),
        (["-m", "d2", "--set", "selection.d2_k=0"], "selection.d2_k == 0, must be >= 1."),
        (["-m", "ccs", "--set", "selection.ccs_strata=0"],
         "selection.ccs_strata == 0, must be >= 1."),
        (["--set", "device=foo"],
         "device == 'foo', must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."),
        (["--target", str(weightless)],
         f"model folder {weightless} has no weights (*.safetensors or *.bin)."),
        (["--small", str(a_file)],
         f"model path {a_file} is a file, not a model folder (or a .gguf file)."),
        (["--data", "/dev/null"], "/dev/null: not a regular file or folder"),
        (["--set", "preset=paperish"], "preset == 'paperish', must be one of 'none', 'authors'."),
        (["--set", "selection.fill=random"],
         "selection.fill == 'random', must be one of 'weighted', 'uniform'."),
    ]
    if not torch.cuda.is_available():
        cases += [
            (["--set", "device=cuda"],
             "device == 'cuda', but this machine has no CUDA device; use 'auto' or 'cpu'."),
            (["--set", "small.quantization=8bit"],
             "small.quantization == '8bit' needs a CUDA device (device is cpu)."),
        ]
    return cases


def test_bad_options_on_a_finished_run_are_one_line_and_touch_nothing(edge_run, tmp_path,
                                                                      tiny_target_dir):
    # Issue 16 item 7/8: each was accepted, or checked late (after the folder's records were
    # erased), or reported as a traceback. The finished run must come out byte for byte as it
    # was, and a good run afterwards must redo nothing.
    small = edge_run["tree"]["small"]["name"]
    cases = _bad_options(tmp_path, tiny_target_dir)
    failures = []
    for number, (args, expected) in enumerate(cases):
        cfg, run = copy_run(edge_run, tmp_path / f"case{number}")
        before = snapshot(run)
        res = staff("select", "-c", cfg, "-q", *args)
        message = "error: " + expected.format(small=small) + "\n"
        if res.exit_code != 2 or res.stderr != message or "Traceback" in res.output:
            failures.append(f"{args}: exit {res.exit_code}: {res.output.strip()[-300:]}")
        elif snapshot(run) != before:
            failures.append(f"{args}: the run folder changed")
    print(f"bad inputs: {len(cases)} tried, {len(cases) - len(failures)} clean")
    assert not failures, f"{len(failures)} of {len(cases)} bad inputs:\n" + "\n".join(failures)
    stages = json.loads((run / "state.json").read_text())["stages"]
    res = staff("select", "-c", cfg, "-q")
    assert res.exit_code == 0, res.output
    assert json.loads((run / "state.json").read_text())["stages"] == stages  # nothing redone


def test_id_with_a_line_break_is_rejected(tmp_path, tiny_model_dir, tiny_target_dir):
    from test_pipeline import tiny_config

    rows = [{"id": f"a{i}", "instruction": f"Add {i}.", "input": "", "output": str(i)}
            for i in range(8)]
    rows[3]["id"] = "a3\nb"
    data = tmp_path / "train.jsonl"
    data.write_bytes(jsonl(rows))
    res = staff("select", "-c", tiny_config(tmp_path, data, tiny_model_dir, tiny_target_dir),
                "-q")
    # rows[3] is line 4 of the file: rows count from 1 (as the editor shows them).
    assert_one_line_error(res, f"error: {data} row 4 (id a3\\nb): the id holds a line break "
                               "(field 'id'); ids must be one line")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- score shards

def test_changed_shard_size_while_resuming_scoring_does_not_wedge_the_run(edge_run, tmp_path,
                                                                         monkeypatch):
    # Item 9: shards of 2 from a killed score stage, then a resume with shards of 3 reused
    # them by position: samples were left unscored ("NaN or inf loss") in every later run.
    import staff.scoring.engine as engine

    cfg, run = copy_run(edge_run, tmp_path)
    original, saved = engine._save_shard, []

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt  # killed after two shards

    monkeypatch.setattr(engine, "_save_shard", save_then_stop)
    res = staff("score", "-c", cfg, "-q", "--set", "scoring.shard_size=2")
    assert res.exit_code == 130, res.output
    assert len(list((run / "score_shards").glob("shard-*"))) == 2
    monkeypatch.undo()
    res = staff("select", "-c", cfg, "-q", "--set", "scoring.shard_size=3")
    assert res.exit_code == 0, res.output
    assert read_ids(run) == read_ids(edge_run["result"].run_dir)


# ----------------------------------------------------------------------------- kill during pick

# Runs the CLI and dies (as SIGKILL would: no cleanup, no finally) just before its KILL_AT-th
# rename into place: every file and folder the run writes appears by a rename.
KILL_AT_RENAME = """
import os, pathlib, sys
limit, count = int(os.environ["KILL_AT"]), [0]
real_replace, real_rename = os.replace, pathlib.Path.rename
def tick():
    count[0] += 1
    if count[0] == limit:
        os._exit(137)
def replace(src, dst, *args, **kwargs):
    tick()
    return real_replace(src, dst, *args, **kwargs)
def rename(self, target):
    tick()
    return real_rename(self, target)
os.replace, pathlib.Path.rename = replace, rename
from staff.cli import app
app(prog_name="staff")
"""


def assert_rate_folders_whole(run: Path) -> None:
    """What readers see: summary.json (if any) lists rate folders that are each one pick."""
    summary_path = run / "selections" / "summary.json"
    if not summary_path.is_file():
        return
    summary = json.loads(summary_path.read_text())
    for name, info in summary.items():
        folder = run / "selections" / name
        ids = (folder / "ids.txt").read_text().splitlines()
        coreset = [json.loads(line)["id"] for line in
                   (folder / "coreset.jsonl").read_text().splitlines()]
        assert len(ids) == info["m"] and sorted(ids) == sorted(coreset), name


def test_kill_at_every_rename_of_a_pick_leaves_whole_rate_folders(edge_run, tmp_path):
    # Item 11: a re-pick (other ids at p = 0.5, and a new rate 0.8) killed before each
    # of its renames in turn; each time the folder is readable and whole, and the next run
    # ends with the ids of an uninterrupted one.
    reference_cfg, reference = copy_run(edge_run, tmp_path / "reference")
    args = ["pick", "-q", "-p", "0.5,0.8", "--set", "selection.within_region=top"]
    assert staff(*args, "-c", reference_cfg).exit_code == 0
    expected = read_ids(reference)
    assert expected["p0.50"] != read_ids(edge_run["result"].run_dir)["p0.50"]
    env = child_env(1)
    tried, identical, problems = 0, 0, []
    for kill_at in range(1, 60):
        folder = tmp_path / f"k{kill_at}"
        cfg, run = copy_run(edge_run, folder)
        proc = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, *args, "-c", str(cfg)],
                              env=dict(env, KILL_AT=str(kill_at)), capture_output=True,
                              text=True, timeout=300)
        if proc.returncode == 0:
            break  # fewer renames than kill_at: every kill point was tried
        assert proc.returncode == 137, proc.stderr[-2000:]
        tried += 1
        try:
            assert_rate_folders_whole(run)
            res = staff(*args, "-c", cfg)
            assert res.exit_code == 0, res.output
            assert read_ids(run) == expected
            assert partial_files(run) == []
            identical += 1
        except AssertionError as err:
            problems.append(f"killed at rename {kill_at}: {str(err)[:300]}")
        shutil.rmtree(folder)
    print(f"kill points: {tried} tried, {identical} whole and identical after resuming")
    assert tried >= 8, tried
    assert not problems, f"{identical} of {tried} kill points identical:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- scratch left over

def test_finetune_folder_left_by_a_kill_after_the_stage_was_recorded_goes(edge_run, tmp_path):
    # Item 12: killed after mark_done, before the scratch folder was removed.
    cfg, run = copy_run(edge_run, tmp_path)
    (run / "finetune" / "checkpoint").mkdir(parents=True)
    (run / "finetune" / "checkpoint" / "state.json").write_text("{}")
    (run / "score_shards").mkdir()
    res = staff("select", "-c", cfg, "-q")
    assert res.exit_code == 0, res.output
    assert not (run / "finetune").exists() and not (run / "score_shards").exists()


# ----------------------------------------------------------------------------- disk full

@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_disk_full_while_checkpointing_is_one_line_and_resumable(edge_run, tmp_path,
                                                                 monkeypatch, writer):
    # Item 13: neither library raises OSError for a full disk.
    import peft.peft_model
    import safetensors

    import staff.runs.folder as runfolder

    cfg, run = copy_run(edge_run, tmp_path, finetune={**edge_run["tree"]["finetune"],
                                                      "checkpoint_every": 1})
    if writer == "safetensors":
        def full(*args, **kwargs):
            raise safetensors.SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                '"No space left on device" })')
        monkeypatch.setattr(peft.peft_model, "safe_save_file", full)
    else:
        def full(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed")
        monkeypatch.setattr(torch, "save", full)
        monkeypatch.setattr(runfolder.shutil, "disk_usage",
                            lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    res = staff("train-small", "-c", cfg, "-q")
    assert_one_line_error(res, f"error: cannot write {run / 'finetune' / 'checkpoint'}: "
                               f"{os.strerror(errno.ENOSPC)}")
    assert not (run / "finetune" / "checkpoint.tmp").exists()
    assert "train-small" not in json.loads((run / "state.json").read_text())["stages"]
    monkeypatch.undo()
    res = staff("select", "-c", cfg, "-q")
    assert res.exit_code == 0, res.output
    assert read_ids(run) == read_ids(edge_run["result"].run_dir)


# ----------------------------------------------------------------------------- the lock

HOLD_LOCK = """
import sys, time
from staff.runs.folder import RunFolder
with RunFolder(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_run_on_a_locked_folder_names_the_holder(edge_run, tmp_path):
    # Item 14: two runs in one folder interleaved their writes; now the second stops at once.
    cfg, run = copy_run(edge_run, tmp_path)
    before = snapshot(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], env=child_env(1),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = staff("select", "-c", cfg, "-q", "--seed", "3")
        assert res.exit_code == 2, res.output
        line = res.stderr.strip()
        assert "\n" not in line
        assert line.startswith(f"error: run folder {run} is in use by process {holder.pid} on ")
        assert line.endswith("; wait for it to finish or use another output_dir.")
        assert snapshot(run) == before
    finally:
        holder.kill()  # a killed holder's lock is released by the OS
        holder.wait()
    res = staff("select", "-c", cfg, "-q")
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------------- huge rows

def test_huge_row_is_cut_before_tokenizing_with_the_same_tokens(tiny_model_dir):
    # Item 16: a 30 MB row took 5.9 GB because it was tokenized whole. What the tokenizer sees
    # now follows cutoff_len; the tokens kept are those of tokenizing the whole row.
    from transformers import AutoTokenizer

    from staff.config import DataConfig
    from staff.data import to_examples
    from staff.data import formatting

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    seen = []
    original_call = type(tokenizer).__call__

    def spy(self, text, *args, **kwargs):
        seen.append(len(text))
        return original_call(self, text, *args, **kwargs)

    cfg = DataConfig(path="x", format="alpaca", cutoff_len=48)
    big = " ".join(["the dog runs in the park"] * 40_000)  # ~1 MB
    rows = [{"id": "big-input", "instruction": "Summarise.", "input": big, "output": "ok"},
            {"id": "big-output", "instruction": "Repeat.", "input": "", "output": big},
            {"id": "small", "instruction": "Add 1 and 2.", "input": "", "output": "3"}]
    examples = to_examples(rows, cfg)
    whole = []
    for ex in examples:  # the old way: everything tokenized
        p, r = formatting._encode(ex, tokenizer, cfg, formatting._added_suffix(tokenizer))
        if len(p) + len(r) > cfg.cutoff_len:
            p, r = formatting._truncate(p, r, cfg.cutoff_len, tokenizer.bos_token_id)
        whole.append(p + r)
    try:
        type(tokenizer).__call__ = spy
        cut = formatting.tokenize_examples(examples, tokenizer, cfg)
    finally:
        type(tokenizer).__call__ = original_call
    assert [t.input_ids for t in cut] == whole
    assert max(seen) <= 48 * formatting._CHARS_PER_TOKEN + 100, max(seen)


# ----------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("argv, expected", [
    (["select", "--nosuch"], "error: No such option: --nosuch (Possible options: --out) "
                             "(see `staff select --help`)"),
    (["select", "-p"], "error: Option '-p' requires an argument. (see `staff --help`)"),
    (["report"], "error: Missing argument 'run_folder'. (see `staff report --help`)"),
    (["nosuchcmd"], "error: No such command 'nosuchcmd'. (see `staff --help`)"),
])
def test_usage_error_is_one_line(argv, expected, capsys):
    # Item 17: click's usage errors were a framed box of five lines.
    from staff.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == expected + "\n"


def test_help_still_exits_zero(capsys):
    from staff.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["select", "--help"])
    assert exit_.value.code == 0
    assert "Usage: staff select" in capsys.readouterr().out
