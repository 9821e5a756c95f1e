"""Stage verify: STAFF's verification on the target (Algorithm 1, lines 4-10), in one place.

The selector (``selection.staff``, pure numpy) makes the regions and draws b_v samples from
each; this stage hands it the target check as a function, runs it once and records each
verified sample's small and target score in verification.csv. ``pick`` hands the selector the
same answers read back from that file (``verified_scores``), so the target is never run twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..runs.folder import fingerprint, read_table, write_table
from ..runs.layout import SCORES, VERIFICATION, verification_columns
from .base import Stage, selection_input
from .context import RunContext

log = logging.getLogger(__name__)


class Verify(Stage):
    name = "verify"
    inputs = (SCORES,)
    outputs = (VERIFICATION,)

    def fingerprint(self, ctx: RunContext, fps: dict[str, str]) -> str:
        c, s = ctx.cfg, ctx.cfg.selection
        # Options added later join a fingerprint only when not at their default, so that runs
        # made before them are not redone.
        later = [v for v in (s.boundary,) if v != "upper"]
        return fingerprint(fps["score"], asdict(c.target), asdict(c.lora), c.scoring.scope,
                           s.regions, s.verify_per_region, s.hard_prune, s.verify_small_regions,
                           s.score, s.verify, c.seed, *_variant_options(s), *later)

    def run(self, ctx: RunContext) -> dict:
        if not ctx.is_main:  # K·b_v samples: one process is plenty
            return {}
        from ..selection import make_selector

        score = ctx.cfg.selection.score
        data = selection_input(ctx)
        answers: dict[int, float] = {}

        def on_target(indices: np.ndarray) -> np.ndarray:
            scores = np.asarray(target_scores(ctx, indices), dtype=np.float64)
            answers.update(zip(np.asarray(indices).tolist(), scores.tolist()))
            return scores

        _, plan, _ = make_selector(ctx.cfg.selection, on_target).prepare(data, ctx.cfg.seed)
        columns = verification_columns(score)
        rows = [(data.ids[i], r, data.scores[score][i], answers[int(i)])
                for r, idx in plan.items() for i in idx]
        table = pd.DataFrame(rows, columns=columns)
        write_table(ctx.run / VERIFICATION, table)
        _warn_if_low_agreement(table[columns[2]].to_numpy(float),
                               table[columns[3]].to_numpy(float))
        return {"target_samples": len(rows)}


def verified_scores(ctx: RunContext, ids) -> Callable[[np.ndarray], np.ndarray]:
    """The target check for ``pick``: the answers stage verify recorded, by sample index."""
    score = ctx.cfg.selection.score
    table = read_table(ctx.run / VERIFICATION)
    position = pd.Index(ids).get_indexer(table["id"])
    known = dict(zip(position.tolist(), table[f"target_{score}"].astype(float)))

    def lookup(indices: np.ndarray) -> np.ndarray:
        try:
            return np.array([known[int(i)] for i in indices], dtype=np.float64)
        except KeyError:  # pragma: no cover - a corrupted run folder
            raise RuntimeError(f"{VERIFICATION} lacks samples the selection needs; redo "
                               "`staff verify`.") from None

    return lookup


def target_scores(ctx: RunContext, indices: np.ndarray) -> np.ndarray:
    """``selection.score`` of the given samples on the target with a fresh LoRA (B = 0)."""
    from ..models.adapters import attach_lora
    from ..models.loading import load_model, tokenizer_fingerprint
    from ..scoring.engine import score_samples
    from ..training.losses import named_errors

    c = ctx.cfg
    if tokenizer_fingerprint(ctx.tokenizer("small")) != tokenizer_fingerprint(
            ctx.tokenizer("target")) and not _task_vocabulary_draft(c.small.name):
        log.warning("small (%s) and target (%s) tokenize differently: they are not one "
                    "family, so the speculative scores may agree less with the target's",
                    c.small.name, c.target.name)
    model = attach_lora(load_model(c.target, ctx.device), c.lora, c.seed, dropout=0.0)
    subset = ctx.tokenized("target", [int(i) for i in indices])
    with named_errors(f"scoring on the target model {c.target.name}"):
        table = score_samples(model, subset, ctx.tokenizer("target").pad_token_id,
                              batch_size=c.scoring.batch_size, scope=c.scoring.scope,
                              device=ctx.device, desc="verification (target)",
                              show_progress=ctx.show_progress)
    return getattr(table, c.selection.score)


def _task_vocabulary_draft(name: str) -> bool:
    """A `staff draft` with the task's vocabulary: its tokenizer is the target's, cut to the
    task's tokens and checked to split the task's samples the same way; not another family."""
    try:
        record = json.loads((Path(name).expanduser() / "draft.json").read_text())
    except (OSError, ValueError):
        return False
    sizes = record.get("vocabulary", {})
    return sizes.get("draft", 0) < sizes.get("target", 0)


def _variant_options(s) -> tuple:
    """The region and length options beyond the paper, when set: they change the regions and
    so the verified samples. Left out at their defaults, so that runs made before they existed
    keep their fingerprints."""
    options = {"region_edges": s.region_edges, "length_adjust": s.length_adjust}
    if s.region_edges == "quantile-clipped":
        options["region_clip"] = s.region_clip
    changed = {k: v for k, v in options.items() if v not in ("equal-width", "none")}
    return (changed,) if changed else ()


def _warn_if_low_agreement(small: np.ndarray, target: np.ndarray) -> None:
    """STAFF rests on the small model ranking samples as the target does; say so in the log
    when, on the verified samples, it does not (the report explains it in place too)."""
    if len(small) < 3 or np.ptp(small) == 0 or np.ptp(target) == 0:
        return
    from scipy.stats import spearmanr

    from ..report.numbers import LOW_RHO, low_agreement_note

    rho = float(spearmanr(small, target).statistic)
    if np.isnan(rho) or rho < LOW_RHO:
        log.warning(low_agreement_note(rho))
