"""Golden files: the selections, scores and regions of a tiny-model run for every method, and
every stage's fingerprint, as the code wrote them before the stage model was restructured
(issue 17). A refactor that changes a byte of them changes what users get, or makes existing
run folders redo their stages.

The data is the embedded demo (its fingerprint has no temp path in it) with the demo config's
selection settings (240 rows, p = 0.5/0.7/0.9, K = 10, b_v = 4); the models are the tiny random
ones of conftest, not the demo's SmolLM2 / Gemma (minutes on a CPU).

Scores are floats from float32 models: another CPU (its vector unit picks other kernels) or
another torch/transformers release changes their last digits (seen on 2026-12-03: relative
differences of 2e-7), and D2's message passing over a k-NN graph turns such differences into
a different pick for a sample or two. So floats are compared to a relative 1e-5, D2's coresets
by overlap (>= 90% of the ids), and everything else exactly: ids, counts, budgets, columns.

Regenerate, only when a change of output is intended: STAFF_REGOLDEN=1 pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from staff.config import DEMO_CONFIG, load_config
from staff.pipeline import Pipeline

GOLDEN = Path(__file__).parent / "golden"
METHODS = ("staff", "random", "length", "grand", "el2n", "ccs", "d2")
# Files written in the run folder root, compared byte for byte.
ROOT_FILES = ("scores.csv", "target_scores.csv", "verification.csv")
# Per rate folder: the ids (file order = coreset order) and the region table.
RATE_FILES = ("ids.txt", "regions.csv")


def _config(tmp_path: Path, small: str, target: str, method: str) -> Path:
    tree = {
        "data": dict(DEMO_CONFIG["data"]),
        "small": {"name": small}, "target": {"name": target},
        "lora": dict(DEMO_CONFIG["lora"], dropout=0.0),
        "finetune": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3},
        "scoring": {"batch_size": 16},
        "selection": dict(DEMO_CONFIG["selection"], method=method),
        "output_dir": str(tmp_path / "run"), "seed": 0,
        "report": {"enabled": False},
    }
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


# Fingerprints also of STAFF's ablations (computed only, not run).
VARIANTS = {m: (m, []) for m in METHODS} | {
    "staff-untuned-target": ("staff", ["selection.speculative=untuned-target"]),
    "staff-no-verify": ("staff", ["selection.verify=false"]),
    "staff-quantile-edges": ("staff", ["selection.region_edges=quantile-clipped"])}


def _fingerprints(tmp_path: Path, method: str, overrides: list[str]) -> dict:
    """Every stage's fingerprint for fixed model names (no temp paths), without running."""
    cfg = load_config(_config(tmp_path, "golden/small", "golden/target", method), overrides)
    return Pipeline(cfg, show_progress=False).fingerprints()


def _produced(run: Path) -> dict[str, bytes]:
    files = {name: (run / name).read_bytes() for name in ROOT_FILES if (run / name).is_file()}
    digests = []
    for path in sorted((run / "selections").rglob("*")):
        if path.name in RATE_FILES:
            files[str(path.relative_to(run))] = path.read_bytes()
        elif path.name == "coreset.jsonl":  # the rows themselves: their digest is enough
            digests.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  "
                           f"{path.relative_to(run)}\n")
    files["coresets.sha256"] = "".join(digests).encode()
    return files


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory, tiny_model_dir, tiny_target_dir):
    """Every method in one run folder, as the README runs them (the baselines share the
    fine-tuned target). One torch thread: float sums in another order would differ."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("golden")
        for method in METHODS:
            Pipeline(load_config(_config(tmp, tiny_model_dir, tiny_target_dir, method)),
                     show_progress=False).run_all()
        fingerprints = {name: _fingerprints(tmp, *v) for name, v in VARIANTS.items()}
    finally:
        torch.set_num_threads(threads)
    return _produced(tmp / "run"), fingerprints


def test_golden_files_unchanged(golden_run):
    produced, fingerprints = golden_run
    if os.environ.get("STAFF_REGOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for name, data in produced.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_bytes(data)
        (GOLDEN / "fingerprints.json").write_text(json.dumps(fingerprints, indent=2) + "\n")
    expected = sorted(str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*")
                      if p.is_file() and p.name != "fingerprints.json")
    assert sorted(produced) == expected
    changed = [name for name in expected
               if not _same(name, (GOLDEN / name).read_bytes(), produced[name])]
    assert not changed, f"files differ from tests/golden: {changed}"


# D2's coresets: the share of ids that must agree (float-level differences move a few).
D2_OVERLAP = 0.9


def _same(name: str, golden: bytes, produced: bytes) -> bool:
    """Whether a produced file matches its golden copy up to float rounding (module doc)."""
    if golden == produced:
        return True
    if name.endswith(".csv"):
        import io

        import numpy as np
        import pandas as pd

        a, b = (pd.read_csv(io.BytesIO(x), dtype={"id": str}) for x in (golden, produced))
        if list(a.columns) != list(b.columns) or a.shape != b.shape:
            return False
        for column in a.columns:
            x, y = a[column], b[column]
            if x.dtype.kind == "f" or y.dtype.kind == "f":
                if not np.allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-5, atol=1e-7,
                                   equal_nan=True):
                    return False
            elif not x.equals(y):
                return False
        return True
    if name.startswith("selections/d2/") and name.endswith("ids.txt"):
        a, b = golden.decode().split(), produced.decode().split()
        return len(a) == len(b) and len(set(a) & set(b)) >= D2_OVERLAP * len(a)
    if name == "coresets.sha256":  # D2's rows follow its ids, compared above
        def others(data: bytes) -> list[str]:
            return [line for line in data.decode().splitlines() if "selections/d2/" not in line]
        return others(golden) == others(produced)
    return False


def test_golden_fingerprints_unchanged(golden_run):
    """Existing run folders resume only while every stage keeps its fingerprint."""
    _, fingerprints = golden_run
    assert fingerprints == json.loads((GOLDEN / "fingerprints.json").read_text())
