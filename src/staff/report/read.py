"""A finished run folder read back for the report: its config, scores, verification, rate
folders and timings, through the run-folder layout (``staff.runs.layout``). Files only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..runs import layout as L
from ..runs.folder import read_table


STAGE_ORDER = ("train-small", "score", "verify", "pick")


class ReportError(ValueError):
    """The folder is not a finished run, or one of its files is unreadable; names the file."""


@dataclass
class Rate:
    name: str            # "p0.50"
    pruning_rate: float
    n: int
    m: int
    ids: list[str]
    regions: pd.DataFrame | None   # STAFF's region table; None for other methods
    current: bool = True           # False: left by an earlier pick with other scores/options


@dataclass
class Run:
    path: Path
    cfg: object          # staff.config.RunConfig
    scores: pd.DataFrame
    verification: pd.DataFrame
    rates: list[Rate]
    timings: dict[str, float] = field(default_factory=dict)
    method: str = "staff"


def _csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise ReportError(f"{path} is missing: not a finished run folder.")
    try:
        frame = read_table(path)
    except (ValueError, OSError) as err:
        raise ReportError(f"{path}: cannot read it ({str(err).strip().splitlines()[0]}).")
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ReportError(f"{path}: no column '{missing[0]}' (has {', '.join(frame)}).")
    return frame


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ReportError(f"{path}: cannot read it ({err}).")


def read_run(run_dir: str | Path, method: str | None = None) -> Run:
    """Everything the report on ``method``'s coresets shows (default: STAFF's, else the
    folder's only method), from the run folder's files."""
    from ..config import config_from_dict
    from ..runs.result import methods_in

    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder.")
    if method is None:
        method = (methods_in(path) or ["staff"])[0]
    summary_path = L.selections_dir(path, method) / L.SUMMARY
    if not (path / L.CONFIG).is_file() or not summary_path.is_file():
        raise ReportError(f"{path} is not a finished run folder: it has no config.yaml or no "
                          f"{summary_path.relative_to(path)} (run `staff select` first).")
    try:
        cfg = config_from_dict(yaml.safe_load((path / L.CONFIG).read_text("utf-8")) or {})
    except yaml.YAMLError as err:
        raise ReportError(f"{path / L.CONFIG}: not valid YAML ({err}).")
    if method == "staff":
        scores = _csv(path / L.SCORES, ("id", "effort"))
        verification = _csv(path / L.VERIFICATION, ("id", "region"))
    else:  # the baselines' scores are the fine-tuned target's; random has none
        name = L.scores_file(method)
        scores = (_csv(path / name, ("id",)) if name and (path / name).is_file()
                  else pd.DataFrame(columns=["id"]))
        verification = pd.DataFrame(columns=["id", "region", "small_effort", "target_effort"])
    # Columns are small_<score> / target_<score>: effort by default, el2n or loss when the
    # run used another speculative score (selection.score).
    pair = [c for c in verification.columns if c.startswith(("small_", "target_"))]
    if len(pair) == 2 and "small_effort" not in verification.columns:
        verification = verification.rename(columns={pair[0]: "small_effort",
                                                    pair[1]: "target_effort"})
    rates = []
    for name, info in sorted(_json(summary_path).items(), key=lambda kv: kv[1]["pruning_rate"]):
        folder = summary_path.parent / name
        ids_path = folder / L.IDS
        if not ids_path.is_file():
            raise ReportError(f"{ids_path} is missing: not a finished run folder.")
        ids = ids_path.read_text(encoding="utf-8").splitlines()
        regions = (_csv(folder / L.REGIONS, ("region", "lo", "hi", "size", "verified",
                                                 "factor", "budget", "selected"))
                   if method == "staff" else None)
        rates.append(Rate(name, float(info["pruning_rate"]), int(info["n"]), int(info["m"]),
                          ids, regions, bool(info.get("current", True))))
    return Run(path, cfg, scores, verification, rates, _timings(path, method), method)


def _timings(path: Path, method: str = "staff") -> dict[str, float]:
    """timings.json, else the seconds recorded in state.json; stages in run order; only the
    stages ``method`` runs (a folder shared by several methods records them all)."""
    if (path / L.TIMINGS).is_file():
        raw = _json(path / L.TIMINGS)
    elif (path / L.STATE).is_file():
        raw = {k: v.get("seconds", 0.0) for k, v in _json(path / L.STATE)["stages"].items()}
    else:
        return {}
    if method in ("random", "length"):
        raw = {s: t for s, t in raw.items() if s == "pick"}
    elif method != "staff":
        raw = {s: t for s, t in raw.items() if s in L.TARGET_STAGES}
    else:
        raw = {s: t for s, t in raw.items() if s not in L.TARGET_STAGES or s == "pick"}
    order = [s for s in STAGE_ORDER if s in raw] + [s for s in raw if s not in STAGE_ORDER]
    return {s: float(raw[s]) for s in order}
