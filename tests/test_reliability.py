"""Issue 7, reliability. Bad input: one line on stderr starting with "error: ", exit code 2, no
traceback (unless --debug) and nothing half-written. Outputs appear atomically. A run killed with
SIGKILL while fine-tuning or scoring resumes without redoing finished work and ends with the ids
of an uninterrupted run. The same seed gives the same ids whatever the thread count.

The readers' own messages (file:line, row, field) are tested in test_data.py; here the same cases
go through the command line, which is what a user sees.
"""

from __future__ import annotations

import builtins
import errno
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pipeline import tiny_config

from staff.config import DataConfig
from staff.data import DataError, load_rows, to_examples


def staff(*args):
    from typer.testing import CliRunner

    from staff.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(res, expected: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.stderr == expected + "\n", res.output


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def read_ids(run: Path) -> dict[str, list[str]]:
    return {p.parent.name: p.read_text().splitlines()
            for p in sorted((run / "selections").glob("p*/ids.txt"))}


def partial_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if ".tmp" in p.name or ".old" in p.name]


# ----------------------------------------------------------------------------- bad data

GOOD = {"instruction": "Add 1 and 2.", "input": "", "output": "3"}
BAD_DATA = {
    "empty file": (b"", "{path}: no rows"),
    "malformed JSON line": (jsonl([{"id": "a", **GOOD}]) + b'{"id": "b", "output" "3"}\n',
                            "{path}:2: not valid JSON (Expecting ':' delimiter)"),
    "missing prompt field": (jsonl([{"id": "a", **GOOD}, {"id": "b", "output": "3"}]),
                             "{path} row 2 (id b): missing prompt field 'instruction'"),
    "empty prompt field": (jsonl([{"id": "a", **GOOD}, {**GOOD, "id": "b", "instruction": " "}]),
                           "{path} row 2 (id b): empty prompt field 'instruction'"),
    "missing response field": (jsonl([{"id": "a", "instruction": "Say hi."}]),
                               "{path} row 1 (id a): missing response field 'output'"),
    "empty response field": (jsonl([{"id": "a", **GOOD}, {**GOOD, "id": "b", "output": ""}]),
                             "{path} row 2 (id b): empty response field 'output'"),
    "non-UTF-8 bytes": (jsonl([{"id": "a", **GOOD}]) + b'{"id": "b", "instruction": "caf\xe9"}\n',
                        "{path}:2: not valid UTF-8 (byte 0xe9); save the file as UTF-8"),
    "duplicate ids": (jsonl([{"id": i, **GOOD} for i in ("a", "b", "a")]),
                      "{path} rows 1 and 3: duplicate id 'a' (field 'id'); ids must be unique"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_one_line_error_and_writes_nothing(case, tmp_path, tiny_model_dir,
                                                       tiny_target_dir):
    content, expected = BAD_DATA[case]
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    cfg = tiny_config(tmp_path, path, tiny_model_dir, tiny_target_dir)
    res = staff("select", "-c", cfg, "-q")
    assert_one_line_error(res, "error: " + expected.format(path=path))
    assert not (tmp_path / "run").exists(), "bad input must not leave a run folder behind"


@pytest.mark.parametrize("args, expected", [
    (["-p", "1.5"], "selection.pruning_rates contains 1.5, must be in (0, 1)."),
    (["-p", "0"], "selection.pruning_rates contains 0.0, must be in (0, 1)."),
    (["-p", "1"], "selection.pruning_rates contains 1.0, must be in (0, 1)."),
    (["-p", "half"], "--pruning-rates: 'half' is not a number (give e.g. -p 0.5,0.7,0.9)."),
    (["-p", "0.5,,0.9"], "--pruning-rates: '' is not a number (give e.g. -p 0.5,0.7,0.9)."),
    (["--set", "selection.pruning_rates=[half]"],
     "selection.pruning_rates contains 'half', must be numbers in (0, 1)."),
    (["--set", "selection.regions=41"],
     "selection.regions == 41, must be <= the number of samples N == 40."),
    (["--set", "selection.pruning_rates=[0.99]"],
     "selection.pruning_rates has 0.99: with N == 40 the coreset would be empty."),
    (["--small", "/no/such/model"], "model path /no/such/model does not exist."),
    # The target is checked before fine-tuning, not after it.
    (["--target", "/no/such/target"], "model path /no/such/target does not exist."),
])
def test_bad_option_is_one_line_error_and_writes_nothing(args, expected, tmp_path, alpaca_file,
                                                         tiny_model_dir, tiny_target_dir):
    cfg = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir)
    res = staff("select", "-c", cfg, "-q", *args)
    assert_one_line_error(res, "error: " + expected)
    assert not (tmp_path / "run").exists()


def test_config_file_with_non_utf8_bytes_is_one_line_error(tmp_path, alpaca_file,
                                                           tiny_model_dir, tiny_target_dir):
    cfg = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir)
    cfg.write_bytes(cfg.read_bytes() + b"# caf\xe9\n")
    line = cfg.read_bytes().count(b"\n")
    res = staff("select", "-c", cfg, "-q")
    assert_one_line_error(res, f"error: {cfg}:{line}: not valid UTF-8 (byte 0xe9); save the "
                               "file as UTF-8.")


def test_debug_shows_the_traceback(tmp_path, tiny_model_dir, tiny_target_dir):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"")
    cfg = tiny_config(tmp_path, path, tiny_model_dir, tiny_target_dir)
    res = staff("select", "-c", cfg, "-q", "--debug")
    assert res.exit_code != 0 and isinstance(res.exception, DataError)


# Hypothesis: whatever bytes a data file holds, reading it gives rows or a one-line DataError
# naming the file, never another exception (which the CLI would show as a traceback).
_FRAGMENTS = ["{", "}", "[", "]", '"', ",", ":", "\n", "\r\n", " ", "a", "1", "-", "null",
              '"id"', '"x"', "\ufeff", "\u2028", "é", "\\", "1e999", "NaN"]
file_bytes = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map(lambda p: "".join(p).encode()),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map(
        lambda p: "".join(p).encode("latin-1", "replace")))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=file_bytes, suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_any_file_content_gives_rows_or_one_line_data_error(tmp_path, content, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(content)
    try:
        rows = load_rows(DataConfig(path=str(path)))
    except DataError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
    else:
        assert rows and all(isinstance(r, dict) for r in rows)


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["role", "content", "from", "value"]),
                                         inner, max_size=3), max_leaves=6)
_rows = st.lists(st.dictionaries(
    st.sampled_from(["id", "instruction", "input", "output", "prompt", "completion", "messages",
                     "x\ny"]), _values, max_size=4), max_size=4)


@settings(max_examples=200, deadline=None)
@given(rows=_rows, fmt=st.sampled_from(["auto", "alpaca", "prompt_completion", "messages"]))
def test_any_rows_give_examples_or_one_line_data_error(rows, fmt):
    try:
        examples = to_examples(rows, DataConfig(path="x", format=fmt), "train.jsonl")
    except DataError as err:
        assert str(err).startswith("train.jsonl") and "\n" not in str(err)
    else:
        assert all(e.prompt.strip() and e.response.strip() for e in examples)
        assert len({e.id for e in examples}) == len(rows)


# ----------------------------------------------------------------------------- awkward but valid

def _no_pad_model(src: str, dst: Path) -> Path:
    """A copy of the tiny model whose tokenizer (and config) have no pad token."""
    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    tok.pad_token = None
    tok.save_pretrained(dst)
    config = json.loads((dst / "config.json").read_text())
    config["pad_token_id"] = None
    (dst / "config.json").write_text(json.dumps(config))
    assert AutoTokenizer.from_pretrained(dst).pad_token_id is None
    return dst


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory, tiny_model_dir, tiny_target_dir):
    """One finished run on valid but awkward input: a small model whose tokenizer has no pad
    token, a row far longer than data.cutoff_len, and b_v larger than every region. Rows s3
    and s7 hold a '~', which test_nan_on_the_target_names_the_samples breaks on the target."""
    from staff.config import load_config
    from staff.pipeline import Pipeline

    folder = tmp_path_factory.mktemp("edge")
    rows = [{"id": f"s{i}", "instruction": f"Add {i} and {2 * i}.",
             "input": "the dog runs" + (" ~" if i in (3, 7) else ""), "output": str(3 * i)}
            for i in range(24)]
    rows[5]["input"] = " ".join(["park"] * 300)
    data = folder / "train.jsonl"
    data.write_bytes(jsonl(rows))
    small = _no_pad_model(tiny_model_dir, folder / "no-pad-model")
    tree = {"data": {"path": str(data), "format": "alpaca", "cutoff_len": 48},
            "small": {"name": str(small)}, "target": {"name": tiny_target_dir},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "finetune": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
            "selection": {"pruning_rates": [0.5], "regions": 4, "verify_per_region": 100},
            "report": {"enabled": False}, "output_dir": str(folder / "run")}
    cfg = folder / "run.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    records, logger = _Records(), logging.getLogger("staff")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        result = Pipeline(load_config(cfg), show_progress=False).run_all()
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    return {"tree": tree, "result": result, "log": records.lines}


def copy_run(edge_run, folder: Path, **sections) -> tuple[Path, Path]:
    """A copy of the edge run folder with its config (sections replaced), to break in a test."""
    run = folder / "run"
    shutil.copytree(edge_run["result"].run_dir, run)
    tree = {**edge_run["tree"], **sections, "output_dir": str(run)}
    cfg = folder / "run.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    return cfg, run


def test_tokenizer_without_pad_token_runs_end_to_end(edge_run):
    result = edge_run["result"]
    assert any("has no pad token; padding with '</s>'" in line for line in edge_run["log"])
    assert len(result.ids[0.5]) == 12
    assert np.isfinite(result.scores[["effort", "loss", "el2n"]].to_numpy()).all()


def test_row_longer_than_cutoff_is_truncated_and_counted(edge_run):
    assert any("1 truncated to data.cutoff_len=48" in line for line in edge_run["log"])
    scores = edge_run["result"].scores.set_index("id")
    assert np.isfinite(scores.loc["s5", "effort"]) and scores.loc["s5", "effort"] > 0


def test_verify_per_region_larger_than_a_region_verifies_the_whole_region(edge_run):
    result = edge_run["result"]
    assert sorted(result.verification["id"]) == sorted(result.scores["id"])
    table = result.regions[0.5]
    assert (table["verified"] == table["size"]).all()


# ----------------------------------------------------------------------------- broken models

def nan_model(src: str, dst: Path) -> Path:
    """A copy of a tiny model whose embedding of '~' is NaN: every sample holding a '~' gets a
    NaN loss, the others do not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    tok = AutoTokenizer.from_pretrained(src)
    with torch.no_grad():
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("~")] = float("nan")
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def test_nan_on_the_target_names_the_samples(edge_run, tmp_path, tiny_target_dir):
    target = nan_model(tiny_target_dir, tmp_path / "nan-target")
    cfg, run = copy_run(edge_run, tmp_path, target={"name": str(target)})
    res = staff("select", "-c", cfg, "-q")
    prefix = (f"error: scoring on the target model {target}: 2 sample(s) have a NaN or inf loss "
              "or gradient: ")
    assert res.exit_code == 2 and res.stderr.startswith(prefix), res.output
    assert sorted(res.stderr[len(prefix):].strip().split(", ")) == ["s3", "s7"]
    assert "Traceback" not in res.output and res.stderr.count("\n") == 1
    assert "verify" not in json.loads((run / "state.json").read_text())["stages"]


def test_nan_while_fine_tuning_stops_before_the_adapter_is_recorded(edge_run, tmp_path,
                                                                    tiny_model_dir):
    small = nan_model(tiny_model_dir, tmp_path / "nan-small")
    cfg, run = copy_run(edge_run, tmp_path, small={"name": str(small)})
    res = staff("select", "-c", cfg, "-q")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.stderr.startswith(f"error: fine-tuning the small model {small}: ")
    assert "NaN or inf loss" in res.stderr and res.stderr.count("\n") == 1
    assert json.loads((run / "state.json").read_text())["stages"] == {}, \
        "a NaN adapter must not be recorded as done"


@pytest.mark.parametrize("other", ["deeper", "wider"])
def test_adapter_of_another_architecture_is_one_line_error(edge_run, tmp_path, tiny_target_dir,
                                                           other):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from staff.config import LoraConfig
    from staff.models.adapters import attach_lora

    config = AutoConfig.from_pretrained(tiny_target_dir)  # 3 layers where the small has 2
    if other == "wider":
        config.num_hidden_layers, config.hidden_size = 2, 48
    torch.manual_seed(0)
    foreign = attach_lora(AutoModelForCausalLM.from_config(config), LoraConfig(r=4, alpha=8), 0)
    cfg, run = copy_run(edge_run, tmp_path)
    shutil.rmtree(run / "small_adapter")
    foreign.save_pretrained(run / "small_adapter", save_embedding_layers=False)
    res = staff("score", "-c", cfg, "-q")
    assert res.exit_code == 2, res.output
    line = res.stderr.rstrip("\n")
    assert "\n" not in line and "Traceback" not in res.output
    assert line.startswith(f"error: adapter {run / 'small_adapter'} does not fit the base model: ")
    assert ("size mismatch for" if other == "wider" else "the model has no place for") in line


# ----------------------------------------------------------------------------- the output folder

def test_output_folder_under_a_file_is_one_line_error(tmp_path, alpaca_file, tiny_model_dir,
                                                      tiny_target_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir,
                      output_dir=str(blocker / "run"))
    res = staff("select", "-c", cfg, "-q")
    assert_one_line_error(res, f"error: cannot create run folder {blocker / 'run'}: "
                               "Not a directory")
    assert blocker.read_text() == "not a folder"


def test_read_only_output_folder_is_one_line_error(tmp_path, alpaca_file, tiny_model_dir,
                                                   tiny_target_dir):
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    try:
        try:
            (out / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("running as root: chmod does not stop writes; "
                        "test_output_folder_under_a_file_is_one_line_error covers this")
        cfg = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir,
                          output_dir=str(out))
        res = staff("select", "-c", cfg, "-q")
        assert_one_line_error(res, f"error: run folder {out} is not writable.")
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


class _DiskFullAfterHalf:
    """A file that takes half of the first write, then fails as a full disk does."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False


@pytest.mark.parametrize("module, name, command, expected", [
    ("staff.runs.folder", "scores.csv", "score", "error: cannot write {path}: {reason}"),
    ("staff.runs.folder", "coreset.jsonl", "pick", "error: cannot write {path}: {reason}"),
])
def test_full_disk_is_one_line_error_and_keeps_the_old_file(edge_run, tmp_path, monkeypatch,
                                                            module, name, command, expected):
    cfg, run = copy_run(edge_run, tmp_path)
    path = run / name if name == "scores.csv" else run / "selections" / "p0.50" / name
    before = path.read_bytes()

    def full_disk_open(file, mode="r", *args, **kwargs):
        fh = builtins.open(file, mode, *args, **kwargs)
        return _DiskFullAfterHalf(fh) if name in Path(file).name and "w" in mode else fh

    monkeypatch.setattr(importlib.import_module(module), "open", full_disk_open, raising=False)
    res = staff(command, "-c", cfg, "-q")
    assert_one_line_error(res, expected.format(path=path, reason=os.strerror(errno.ENOSPC)))
    assert path.read_bytes() == before, "the finished file is intact"
    assert partial_files(run) == []
    stages = json.loads((run / "state.json").read_text())["stages"]
    assert command not in stages and "train-small" in stages
    monkeypatch.undo()  # space is freed: the same command finishes, with the same ids
    res = staff("select", "-c", cfg, "-q")
    assert res.exit_code == 0, res.output
    assert read_ids(run) == read_ids(edge_run["result"].run_dir)


def test_full_disk_while_saving_a_score_shard_names_stage_and_folder(edge_run, tmp_path,
                                                                     monkeypatch):
    # The engine's own writers raise a bare OSError (no file name): the pipeline names the stage
    # and the run folder.
    import staff.scoring.engine as engine

    cfg, run = copy_run(edge_run, tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(engine.np, "savez", full_disk)
    res = staff("score", "-c", cfg, "-q")
    assert_one_line_error(res, f"error: stage score: run folder {run}: "
                               f"{os.strerror(errno.ENOSPC)}")
    assert "score" not in json.loads((run / "state.json").read_text())["stages"]
    assert partial_files(run) == []


# ----------------------------------------------------------------------------- kill and resume

# The CLI with a pause after every checkpoint and score shard is saved, so that the test, which
# polls the run folder, has time to SIGKILL it at the point it picked. Nothing else changes.
PACED_CLI = """
import sys, time
import staff.training.lora as lora, staff.scoring.engine as engine

def paced(module, name):
    original = getattr(module, name)
    def run(*args, **kwargs):
        result = original(*args, **kwargs)
        time.sleep(0.05)
        return result
    setattr(module, name, run)

paced(lora, "_save_checkpoint")
paced(engine, "_save_shard")
from staff.cli import app
app(prog_name="staff")
"""


def child_env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                PYTHONWARNINGS="ignore")


def kill_config(folder: Path, data: Path, small: str, target: str, run: Path, **over) -> Path:
    tree = {"data": {"path": str(data), "format": "alpaca", "cutoff_len": 48},
            "small": {"name": small}, "target": {"name": target},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "finetune": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
            "scoring": {"batch_size": 2},
            "selection": {"pruning_rates": [0.5, 0.8], "regions": 5, "verify_per_region": 3},
            "report": {"enabled": False}, "output_dir": str(run)}
    for key, value in over.items():
        section, name = key.split("__")
        tree[section][name] = value
    cfg = folder / f"{run.name}.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    return cfg


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, tiny_target_dir):
    """An uninterrupted run in a subprocess, one thread, default checkpoint and shard sizes."""
    folder = tmp_path_factory.mktemp("kill")
    rows = [{"id": f"k{i}", "instruction": f"Add {i} and {i + 7}.",
             "input": " ".join(["the", "dog", "runs", "in", "park"][:1 + i % 5]),
             "output": f"{2 * i + 7} " + "cat " * (i % 4)} for i in range(48)]
    data = folder / "train.jsonl"
    data.write_bytes(jsonl(rows))
    cfg = kill_config(folder, data, tiny_model_dir, tiny_target_dir, folder / "reference")
    proc = subprocess.run([sys.executable, "-m", "staff.cli", "select", "-c", str(cfg), "-q"],
                          env=child_env(1), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = folder / "reference"
    return {"folder": folder, "data": data, "run": run, "ids": read_ids(run),
            "scores": pd.read_csv(run / "scores.csv", dtype={"id": str})}


def run_until(cmd: list, env: dict, log: Path, ready, what: str) -> str:
    """Start the CLI, poll ``ready()`` and SIGKILL the process as soon as it holds; the log."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if ready():
                    os.kill(proc.pid, signal.SIGKILL)
                    assert proc.wait() == -signal.SIGKILL
                    return log.read_text(errors="replace")
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n"
                f"{log.read_text(errors='replace')[-3000:]}")


def checkpoint_step(run: Path) -> int:
    try:
        return json.loads((run / "finetune" / "checkpoint" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def checkpoint_at_least(run: Path, step: int):
    """Ready to kill once checkpoint ``step`` is in place and its save has finished, so that
    the kill point is known (a kill in the middle of a save is simulated, deterministically, by
    test_kill_while_a_checkpoint_replaces_the_previous_one)."""
    return lambda: (checkpoint_step(run) >= step
                    and not (run / "finetune" / "checkpoint.old").exists())


def shards(run: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in (run / "score_shards").glob("shard-*.npz"):
        if ".tmp" not in path.name:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found[path.name] = (stat.st_mtime_ns, stat.st_size)
    return found


def assert_consistent(run: Path) -> None:
    """What a killed run leaves: readable state, and every stage marked done has its output."""
    stages = json.loads((run / "state.json").read_text())["stages"]
    yaml.safe_load((run / "config.yaml").read_text())
    if "train-small" in stages:
        assert (run / "small_adapter" / "adapter_model.safetensors").is_file()
        json.loads((run / "small_finetune_history.json").read_text())
    if "score" in stages:
        assert len(pd.read_csv(run / "scores.csv")) == 48


def test_sigkill_during_finetuning_and_scoring_resumes_to_the_same_ids(
        reference, tiny_model_dir, tiny_target_dir):
    folder, run = reference["folder"], reference["folder"] / "killed"
    # 12 optimiser steps with a checkpoint after each; 24 shards of 2 scored samples.
    cfg = kill_config(folder, reference["data"], tiny_model_dir, tiny_target_dir, run,
                      finetune__checkpoint_every=1, scoring__shard_size=2)
    paced = [sys.executable, "-c", PACED_CLI, "select", "-c", str(cfg)]
    env = child_env(1)

    # 1. Killed during fine-tuning, after its second checkpoint.
    run_until(paced + ["-q"], env, folder / "1.log", checkpoint_at_least(run, 2),
              "fine-tuning step 2")
    first = checkpoint_step(run)
    assert 2 <= first < 12
    assert_consistent(run)
    # 2. Resumed there (not from step 0), and killed again two checkpoints later.
    log = run_until(paced, env, folder / "2.log", checkpoint_at_least(run, first + 2),
                    f"fine-tuning step {first + 2}")
    assert f"resuming fine-tuning at step {first} of 12" in log
    second = checkpoint_step(run)
    assert first + 2 <= second < 12
    assert_consistent(run)
    # 3. Resumed, finishes fine-tuning, killed during scoring after two shards.
    log = run_until(paced, env, folder / "3.log", lambda: len(shards(run)) >= 2, "two shards")
    assert f"resuming fine-tuning at step {second} of 12" in log
    done = shards(run)
    assert 2 <= len(done) < 24
    assert_consistent(run)
    assert list(json.loads((run / "state.json").read_text())["stages"]) == ["train-small"]
    # 4. Scoring resumes: fine-tuning is not redone, finished shards are not rewritten.
    log = run_until(paced, env, folder / "4.log", lambda: len(shards(run)) >= len(done) + 2,
                    "two more shards")
    assert "stage train-small: already done, skipped" in log
    # The stage time includes the killed processes' share (Table 2 reports it).
    entry = json.loads((run / "state.json").read_text())["stages"]["train-small"]
    history = json.loads((run / "small_finetune_history.json").read_text())
    assert entry["seconds_before_resume"] > 0
    assert entry["seconds"] > history["seconds"] > entry["seconds_before_resume"]
    now = shards(run)
    assert {name: now[name] for name in done} == done, "finished shards were rewritten"
    assert len(now) < 24
    assert_consistent(run)
    # 5. Runs to the end: exactly the ids (and scores) of the uninterrupted run.
    proc = subprocess.run(paced + ["-q"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_ids(run) == reference["ids"]
    scores = pd.read_csv(run / "scores.csv", dtype={"id": str})
    assert scores["id"].tolist() == reference["scores"]["id"].tolist()
    np.testing.assert_allclose(scores["effort"], reference["scores"]["effort"], rtol=1e-5)
    assert not (run / "finetune").exists() and not (run / "score_shards").exists()
    assert partial_files(run) == []


def test_same_ids_with_one_or_two_threads(reference, tiny_model_dir, tiny_target_dir):
    folder = reference["folder"]
    cfg = kill_config(folder, reference["data"], tiny_model_dir, tiny_target_dir,
                      folder / "two-threads")
    proc = subprocess.run([sys.executable, "-m", "staff.cli", "select", "-c", str(cfg), "-q"],
                          env=child_env(2), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_ids(folder / "two-threads") == reference["ids"]


@pytest.mark.parametrize("leftover", ["stale old copy", "between the renames"])
def test_kill_while_a_checkpoint_replaces_the_previous_one(reference, tiny_model_dir,
                                                           tiny_target_dir, leftover):
    folder = reference["folder"]
    run = folder / leftover.replace(" ", "-")
    cfg = kill_config(folder, reference["data"], tiny_model_dir, tiny_target_dir, run,
                      finetune__checkpoint_every=1)
    paced = [sys.executable, "-c", PACED_CLI, "select", "-c", str(cfg)]
    run_until(paced + ["-q"], child_env(1), folder / f"{run.name}.log",
              checkpoint_at_least(run, 2), "fine-tuning step 2")
    step = checkpoint_step(run)
    checkpoint = run / "finetune" / "checkpoint"
    if leftover == "stale old copy":  # killed while the previous checkpoint was being removed
        shutil.copytree(checkpoint, checkpoint.with_name("checkpoint.old"))
    else:  # killed after the checkpoint was moved aside, before the new one took its place
        checkpoint.rename(checkpoint.with_name("checkpoint.old"))
    proc = subprocess.run(paced, env=child_env(1), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming fine-tuning at step {step} of 12" in proc.stderr
    assert read_ids(run) == reference["ids"]
