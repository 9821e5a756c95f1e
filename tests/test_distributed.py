"""Data parallel under `accelerate launch` with 2 CPU processes (gloo) vs 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, model_dir: str, out: Path, mode: str, batch_size: int = 8) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # --multi_gpu starts torchrun under accelerate; the worker's Accelerator(cpu=True) then
    # runs MULTI_CPU with the gloo backend (accelerate's own --cpu path does not spawn).
    mode_flag = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode_flag,
           "--num_processes", str(processes), "--num_machines", "1",
           "--main_process_port", str(free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no",
           str(WORKER), model_dir, str(out), mode, str(batch_size)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               ACCELERATE_DISABLE_RICH="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_process_scoring_equals_one_process(tiny_model_dir, tmp_path):
    one = launch(1, tiny_model_dir, tmp_path / "one", "score")
    two = launch(2, tiny_model_dir, tmp_path / "two", "score")
    assert (one["world"], two["world"]) == (1, 2)
    assert two["ids"] == one["ids"]
    np.testing.assert_allclose(two["effort"], one["effort"], rtol=1e-5)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    # Both processes wrote shards: 40 samples in shards of 8.
    assert len(list((tmp_path / "two" / "shards").glob("shard-*.npz"))) == 5


def test_two_process_finetuning_tracks_one_process(tiny_model_dir, tmp_path):
    one = launch(1, tiny_model_dir, tmp_path / "one", "train", batch_size=8)
    two = launch(2, tiny_model_dir, tmp_path / "two", "train", batch_size=4)  # same global batch
    assert two["world"] == 2
    assert len(two["loss"]) == len(one["loss"])
    a, b = np.array(one["loss"]), np.array(two["loss"])
    assert b[-3:].mean() < b[:3].mean()  # it learns
    assert abs(a[-3:].mean() - b[-3:].mean()) < 0.15 * a[:3].mean()


def test_pipeline_rescored_by_two_processes_selects_the_same_ids(tmp_path, alpaca_file,
                                                                 tiny_model_dir, tiny_target_dir):
    """`staff select` in one process, then `staff score` (and what follows) again under
    `accelerate launch` with 2 processes: same scores, same ids, one set of outputs."""
    import shutil

    import pandas as pd
    from test_pipeline import tiny_config

    from staff.config import load_config
    from staff.pipeline import Pipeline

    cfg_path = tiny_config(tmp_path, alpaca_file, tiny_model_dir, tiny_target_dir,
                           scoring__shard_size=8)
    one = Pipeline(load_config(cfg_path), show_progress=False).run_all()
    two_dir = tmp_path / "two"
    shutil.copytree(one.run_dir, two_dir)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "staff.cli", "score", "-c", str(cfg_path), "--out", str(two_dir), "-q"]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_DISABLE_RICH="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Printed once, by the main process.
    assert proc.stdout.count("run folder:") == 1, proc.stdout
    a = pd.read_csv(one.run_dir / "scores.csv")
    b = pd.read_csv(two_dir / "scores.csv")
    assert list(a["id"]) == list(b["id"])
    np.testing.assert_allclose(b["effort"], a["effort"], rtol=1e-5)
    state = json.loads((two_dir / "state.json").read_text())["stages"]
    assert state["score"]["finished_at"] != json.loads(
        (one.run_dir / "state.json").read_text())["stages"]["score"]["finished_at"]
    for p in (0.2, 0.5, 0.7, 0.9):
        ids_one = (one.run_dir / "selections" / f"p{p:.2f}" / "ids.txt").read_text()
        ids_two = (two_dir / "selections" / f"p{p:.2f}" / "ids.txt").read_text()
        assert ids_one == ids_two
