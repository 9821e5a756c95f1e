"""A stage: one step of a selection run, recorded in the run folder's state.json.

Each stage says what it is called, which run-folder files it reads (``inputs``) and writes
(``outputs``), what its result depends on (``fingerprint``: every option it reads, and the
fingerprints of the stages it builds on) and how to compute it (``run``). The pipeline runs a
stage when its fingerprint differs from the one recorded, so a changed option redoes that stage
and the ones after it, and nothing before it.
"""

from __future__ import annotations

from dataclasses import asdict

from ..config import FINETUNE_NO_EFFECT
from ..runs.layout import SCRATCH
from .context import RunContext


class Stage:
    name: str = ""
    inputs: tuple[str, ...] = ()   # run-folder files it reads
    outputs: tuple[str, ...] = ()  # run-folder files and folders it writes

    def fingerprint(self, ctx: RunContext, fps: dict[str, str]) -> str:
        """What the result depends on; ``fps`` holds the stages computed before it."""
        raise NotImplementedError

    def run(self, ctx: RunContext) -> dict:
        """Compute the outputs; returns what state.json records with the stage (under
        ``accelerate launch`` every process runs it; only the main process writes)."""
        raise NotImplementedError

    @property
    def scratch(self) -> str | None:
        """Its resumable work folder (checkpoints, score shards), if it has one."""
        return SCRATCH.get(self.name)

    def scratch_fingerprint(self, ctx: RunContext, fp: str) -> str:
        """What the resumable work depends on: by default the result's inputs."""
        return fp

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


def options(section, *ignore: str) -> dict:
    """A config section's options minus those that cannot change a stage's result (how often
    to checkpoint): changing them must not redo the stage."""
    return {k: v for k, v in asdict(section).items() if k not in ignore}


def tune_options(ctx: RunContext) -> tuple:
    """What fine-tuning on the full data depends on besides the data and the model."""
    c = ctx.cfg
    return asdict(c.lora), options(c.finetune, *FINETUNE_NO_EFFECT), ctx.stage1_seed


def scoring_options(ctx: RunContext) -> dict:
    """The shard size only decides where partial results are kept, not the scores."""
    return options(ctx.cfg.scoring, "shard_size")


def selection_input(ctx: RunContext):
    """What the selector of ``selection.method`` selects from, read from the run folder (or,
    for Random and Length, from the data)."""
    import numpy as np

    from ..runs.folder import read_table
    from ..runs.layout import SCORE_COLUMNS, TARGET_EMBEDDINGS, scores_file
    from ..selection.base import SelectionInput

    method = ctx.cfg.selection.method
    if method == "random":
        return SelectionInput(ids=np.array([e.id for e in ctx.examples]))
    if method == "length":  # response tokens as the target tokenizes them; no model
        counts = [int(np.sum(t.labels != -100)) for t in ctx.tokenized("target")]
        return SelectionInput(ids=np.array([e.id for e in ctx.examples]),
                              scores={"n_response_tokens": np.array(counts, dtype=float)})
    scores = read_table(ctx.run / scores_file(method))
    embeddings = None
    if method == "d2":
        embeddings = np.load(ctx.run / TARGET_EMBEDDINGS)
    return SelectionInput(ids=scores["id"].to_numpy(), embeddings=embeddings,
                          scores={k: scores[k].to_numpy() for k in SCORE_COLUMNS})
