"""results.json of a bench folder: every finished cell and selection run, the tables' source.

Several ``staff bench --parts`` processes (one per GPU) may share a bench folder, so the file
is re-read and merged under a file lock on every save, and results made with other settings
(another ``bench_fingerprint``) are not reused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ..config import FINETUNE_NO_EFFECT
from ..runs.folder import fingerprint, write_json
from ..runs.layout import PREDICTIONS
from .config import BenchConfig

log = logging.getLogger(__name__)


# Selection options added while a bench was running: at their default they leave its fingerprint
# (and so its finished cells) as they were.
BENCH_LATER_OPTIONS = {"length_strata": 0}


def bench_fingerprint(cfg: BenchConfig) -> str:
    """What every cell shares; results.json from other settings is not reused."""
    sel = cfg.select.to_dict()
    for key in ("output_dir", "seed", "report", "device"):
        sel.pop(key, None)
    if sel.get("stage1_seed") is None:
        sel.pop("stage1_seed", None)  # results of benches made before the option still apply
    if not sel.get("early_stop", {}).get("rho"):
        sel.pop("early_stop", None)  # off: the same (a variant that sets it has its own stage 1)
    sel["selection"] = {k: v for k, v in sel["selection"].items()
                        if k not in ("method", "pruning_rates")
                        # options added after benches had started, left out at their default
                        and not (k in BENCH_LATER_OPTIONS and v == BENCH_LATER_OPTIONS[k])}
    fin = {k: v for k, v in dataclasses.asdict(cfg.finetune).items()
           if k not in FINETUNE_NO_EFFECT}
    ev = {k: v for k, v in dataclasses.asdict(cfg.eval).items()
          if k not in ("batch_size", "threads", "decode_samples")}
    if cfg.eval.decode_samples is not None:
        ev["decode_samples"] = cfg.eval.decode_samples
    return fingerprint(sel, dataclasses.asdict(cfg.lora), fin, ev)


def load_results(path: Path, fp: str) -> dict:
    """The store in ``path`` if it was made with the fingerprint ``fp``, else an empty one."""
    results = read_store(path)
    if results and results.get("fingerprint") != fp:
        log.warning("%s was made with other settings: its cells are not reused in the "
                    "tables (the cached artifacts are still checked cell by cell)", path)
        results = {}
    results.setdefault("fingerprint", fp)
    for key in ("cells", "selection", "per_example"):
        results.setdefault(key, {})
    results.setdefault("runs", [])
    return results


def save_results(path: Path, results: dict, recorded: dict[str, set]) -> None:
    """Write ``results`` to ``path``, merged with what other processes of this bench wrote
    since we read it: several ``staff bench --parts`` processes (one per GPU) may share a bench
    folder. The read-merge-write runs under a file lock; each process contributes the entries
    it recorded (``recorded[key]``: its keys of ``results[key]``), so none overwrites another's
    cells. ``results`` is updated in place to the merged store."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        disk = read_store(path)
        if disk.get("fingerprint") == results["fingerprint"]:
            mine = {key: {k: v for k, v in results[key].items() if k in recorded[key]}
                    for key in STORE_KEYS}
            results.update(merge_results(disk, {**results, **mine}))
        write_json(path, results)


STORE_KEYS = ("cells", "per_example", "selection")  # keyed entries of a results store


def read_store(path: Path) -> dict:
    """A results.json as read from disk; {} when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def merge_results(old: dict, new: dict) -> dict:
    """``new`` with the cells, per-example rows and selection runs of ``old`` that it lacks
    (``new``'s win), when both were made with the same settings (fingerprint); else ``new``."""
    if not old or old.get("fingerprint") != new.get("fingerprint"):
        return new
    merged = {**new, **{key: {**old.get(key, {}), **new.get(key, {})} for key in STORE_KEYS}}
    runs = old.get("runs", [])
    merged["runs"] = runs + [r for r in new.get("runs", []) if r not in runs]
    return merged


# The libraries whose version can change a cell's numbers at the same settings: the bench
# fingerprint covers the settings only. (transformers 5.17 and 5.25 read one GGUF's eos token
# differently, which moved every held-out loss by one token's NLL: BENCHMARKS.md, 2026-12-04.)
VERSIONED = ("torch", "transformers", "peft")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def mixed_versions_note(cells) -> str:
    """A warning line when the cells were measured with more than one version of a library
    in VERSIONED ('' when not, or when no cell recorded its versions)."""
    mixed = []
    for name in VERSIONED:
        seen = sorted({e["libraries"][name] for e in cells
                       if name in (e.get("libraries") or {})})
        if len(seen) > 1:
            mixed.append(f"{name} {', '.join(seen)}")
    if not mixed:
        return ""
    return (f"**Warning: these cells were measured with different library versions ("
            f"{'; '.join(mixed)}).** The same settings can then give other numbers (e.g. "
            "another tokenization): compare the untuned cell's loss across them before pairing "
            "cells (results.json: each cell's `libraries`).")


def cell_entry(method, rate, seed, protocol: str, train_info: dict | None, loss: dict,
               metrics: dict | None, old: dict) -> dict:
    """A cell's row of ``results["cells"]``; ``old``: the row it replaces (or {})."""
    entry = {"method": method, "rate": rate, "seed": seed, "protocol": protocol,
             "libraries": library_versions(),
             "loss": loss["loss"], "n_loss": loss["n"],
             # A cell decoded before keeps its decoded metrics when later run without.
             "rouge_l": metrics["rouge_l"] if metrics else old.get("rouge_l"),
             "bleu": metrics["bleu"] if metrics else old.get("bleu"),
             # Evaluations before this key existed have none (None).
             "length_ratio": (metrics.get("length_ratio") if metrics
                              else old.get("length_ratio")),
             "n_eval": metrics["n"] if metrics else old.get("n_eval"),
             "eval_seconds": metrics.get("seconds") if metrics else old.get("eval_seconds")}
    if train_info:
        entry.update(n_train=train_info["samples"], steps=train_info.get("steps"),
                     # what a machine without the cell checks before taking it as done
                     train_fingerprint=train_info.get("fingerprint"),
                     finetune_seconds=train_info.get("seconds"),
                     final_loss=train_info.get("final_loss"))
    return entry


def per_example_entry(loss: dict, metrics: dict | None, eval_dir: Path, old: dict) -> dict:
    """A cell's per-example held-out losses (and ROUGE-L when it was decoded, else the ones it
    had) for ``results["per_example"]``; ``old``: the entry it replaces (or {})."""
    per = {"loss": loss["per_example"]}
    if metrics:
        per.update(_per_example_decoded(eval_dir / PREDICTIONS))
    else:
        per.update({k: old[k] for k in ("rouge_l", "words") if k in old})
    return per


def _per_example_decoded(predictions: Path) -> dict:
    """ROUGE-L of each prediction and, when the evaluation recorded it, its word count."""
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    per = {"rouge_l": [round(float(r["rouge_l"]), 6) for r in rows]}
    if rows and all("words" in r for r in rows):
        per["words"] = [int(r["words"]) for r in rows]
    return per
