"""Effort of a selection run's samples on another adapter of its small model (issue 19).

    python bench/score_checkpoint.py RUN_DIR ADAPTER [ADAPTER ...] --out OUT [--probe 256]
        [--scope last-layer]

RUN_DIR is a STAFF selection run folder (its config.yaml says the data, the small model and
the scoring options); each ADAPTER is a LoRA adapter of its small model: a stage-1 checkpoint
folder (``finetune/checkpoint``, copied aside while stage 1 ran: it is replaced as training
goes on) or an adapter folder. For each, ``OUT/<name>/scores.csv`` gets the run's columns, so
that ``bench/score_agreement.py`` compares it with the run's own scores (effort after one epoch
against after two, say). ``--probe N`` scores only the N samples the early-stop check
(``early_stop.probe``) would draw with the run's stage-1 seed, to replay that rule: with the
adapters given in training order, ``OUT/settle.json`` gets Spearman's rho between consecutive
ones (what the check compares).
``--scope`` scores with another ``scoring.scope`` than the run's (``last-layer``: the LoRA
tensors of the last decoder layer only, the authors' code's choice); ``OUT/<name>/timing.json``
records the scoring's seconds, to compare the scopes' cost side by side.
``<name>`` is the adapter folder's name, or its parent's for a checkpoint's ``adapter``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from staff.config import load_config  # noqa: E402
from staff.runs.folder import write_atomic, write_table  # noqa: E402
from staff.runs.layout import SCORES  # noqa: E402
from staff.stages.context import RunContext  # noqa: E402
from staff.stages.train import SettledEffort  # noqa: E402


def adapter_folder(path: Path) -> Path:
    """A checkpoint keeps its adapter in ``adapter/``; an adapter folder is itself."""
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    if (path / "adapter_config.json").is_file():
        return path
    raise SystemExit(f"{path}: neither an adapter folder nor a checkpoint with one "
                     "(no adapter_config.json)")


def score(run_dir: Path, adapters: list[Path], out: Path, probe: int | None = None,
          scope: str | None = None) -> list[Path]:
    """Write ``out/<name>/scores.csv`` for each adapter; returns the files written."""
    import time

    import torch

    from staff.models.adapters import load_adapter
    from staff.models.loading import load_model
    from staff.scoring.engine import score_samples

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"{run_dir}: no config.yaml (not a selection run folder)")
    cfg = load_config(config)
    ctx = RunContext(cfg, show_progress=False)
    data = ctx.tokenized("small")
    if probe:
        # The very samples early_stop's check scores (stages/train.py), for a replay.
        from dataclasses import replace

        stop = replace(cfg.early_stop, probe=probe)
        data = SettledEffort(data, 0, stop, cfg.scoring, ctx.stage1_seed, ctx.device).probe
    pad_id = ctx.tokenizer("small").pad_token_id
    written = []
    for path in adapters:
        folder = adapter_folder(Path(path))
        name = folder.parent.name if folder.name == "adapter" else folder.name
        torch.manual_seed(0)
        model = load_adapter(load_model(cfg.small, ctx.device), folder)
        started = time.perf_counter()
        table = score_samples(model, data, pad_id, batch_size=cfg.scoring.batch_size,
                              scope=scope or cfg.scoring.scope, device=ctx.device,
                              desc=f"effort ({name})")
        seconds = time.perf_counter() - started
        frame = pd.DataFrame({"id": table.ids, "effort": table.effort, "loss": table.loss,
                              "el2n": table.el2n, "n_response_tokens": table.n_tokens})
        target = out / name / SCORES
        target.parent.mkdir(parents=True, exist_ok=True)
        write_table(target, frame)
        write_atomic(target.parent / "timing.json", json.dumps(
            {"samples": len(frame), "scope": scope or cfg.scoring.scope,
             "seconds": round(seconds, 2), "threads": torch.get_num_threads()}, indent=1))
        written.append(target)
        print(f"{target}: {len(frame)} samples in {seconds:.1f} s, effort median "
              f"{np.median(table.effort):.4g}")
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("adapters", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--probe", type=int, default=None,
                        help="score only early_stop's probe of this many samples")
    parser.add_argument("--scope", choices=("all", "last-layer"), default=None,
                        help="scoring.scope to score with (default: the run's)")
    args = parser.parse_args(argv)
    written = score(args.run_dir, args.adapters, args.out, args.probe, args.scope)
    if args.probe and len(written) > 1:
        curve = settle_curve(written)
        write_atomic(args.out / "settle.json", json.dumps(curve, indent=1))
        for row in curve:
            print(f"{row['from']} -> {row['to']}: rho {row['rho']:.4f}")


def settle_curve(files: list[Path]) -> list[dict]:
    """Spearman's rho of effort between consecutive score files (same samples)."""
    from scipy.stats import spearmanr

    frames = [pd.read_csv(f, dtype={"id": str}).set_index("id")["effort"] for f in files]
    return [{"from": a.parent.name, "to": b.parent.name,
             "rho": float(spearmanr(fa, fb.loc[fa.index]).statistic)}
            for (a, fa), (b, fb) in zip(zip(files, frames), zip(files[1:], frames[1:]))]


if __name__ == "__main__":
    main()
