"""The run folder's layout: every file and stage name, written here and nowhere else.

A selection run folder (``staff select``)::

  config.yaml                       the resolved config
  state.json                        finished stages: fingerprint, seconds (``folder.RunFolder``)
  timings.json                      seconds per stage (the paper's Table 2)
  small_adapter/, target_adapter/   fine-tuned LoRA adapters (train-small, train-target)
  small_finetune_history.json, target_finetune_history.json
  scores.csv                        effort, loss, EL2N per sample (score)
  target_scores.csv, target_embeddings.npy   the same on the fine-tuned target (score-target)
  verification.csv                  STAFF's verified samples (verify)
  selections/[<method>/]summary.json, p0.90/{ids.txt, coreset.jsonl, regions.csv}   (pick)
  report.html, report-<method>.html

A training cell (``staff finetune`` / ``staff evaluate``, and each cell of ``staff bench``)::

  config.yaml, ids.txt              the resolved config (its seed is the cell's), the training ids
  adapter/                          the LoRA adapter (PEFT format)
  history.json                      loss per optimiser step
  train.json                        fingerprint, samples, seconds, final loss
  finetune_work/                    resumable checkpoint while fine-tuning (removed when done)
  eval/, eval-untuned/              metrics.json, predictions.jsonl, loss.json (held-out loss)
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
STATE = "state.json"
TIMINGS = "timings.json"
SCORES = "scores.csv"                    # stage score: the speculative scores
TARGET_SCORES = "target_scores.csv"      # stage score-target (the baselines)
TARGET_EMBEDDINGS = "target_embeddings.npy"
VERIFICATION = "verification.csv"        # stage verify
SELECTIONS = "selections"
SUMMARY = "summary.json"                 # in a selections folder: the rate folders
IDS = "ids.txt"                          # in a rate folder: line k = id of coreset line k
CORESET = "coreset.jsonl"
REGIONS = "regions.csv"                  # STAFF's region table at that rate
SCRATCH_MARKER = "fingerprint"           # in a scratch folder: the inputs it was made with
# A training cell (evaluation.TrainEval).
CELL_ADAPTER = "adapter"
CELL_HISTORY = "history.json"
TRAIN_INFO = "train.json"
FINETUNE_WORK = "finetune_work"
EVAL_DIR = "eval"                        # the evaluation of the cell's adapter
UNTUNED_EVAL_DIR = "eval-untuned"        # ... of the model without it (staff evaluate)
METRICS = "metrics.json"                 # in an evaluation folder: ROUGE-L, BLEU-4
PREDICTIONS = "predictions.jsonl"
HELD_OUT_LOSS = "loss.json"
ADAPTER_CONFIG = "adapter_config.json"   # in a PEFT adapter folder
SCORE_COLUMNS = ("effort", "loss", "el2n", "n_response_tokens")  # besides id, in *scores.csv


def adapter_dir(role: str) -> str:
    """The fine-tuned LoRA adapter of the ``role`` model (small or target)."""
    return f"{role}_adapter"


def history_file(role: str) -> str:
    return f"{role}_finetune_history.json"


def verification_columns(score: str) -> list[str]:
    """verification.csv's columns: the small model's and the target's ``score`` per sample."""
    return ["id", "region", f"small_{score}", f"target_{score}"]


STAGES = ("train-small", "score", "verify", "pick")        # STAFF
TARGET_STAGES = ("train-target", "score-target", "pick")   # GraNd, EL2N, CCS, D2
# A stage's resumable work (checkpoints, score shards): kept while the stage is unfinished, so
# that a killed run resumes it, and removed once the stage is recorded as done.
SCRATCH = {"train-small": "finetune", "score": "score_shards",
           "train-target": "finetune_target", "score-target": "score_target_shards"}
# What each stage that computes something a run can share leaves in the run folder.
OUTPUTS = {"train-small": (adapter_dir("small"), history_file("small")),
           "train-target": (adapter_dir("target"), history_file("target")),
           "score": (SCORES,),
           "score-target": (TARGET_SCORES, TARGET_EMBEDDINGS)}


def stages_for(method: str, speculative: str = "small") -> tuple[str, ...]:
    """The stages a selection method runs, in order."""
    if method in ("random", "length"):
        return ("pick",)
    if method != "staff":
        return TARGET_STAGES
    if speculative == "untuned-target":
        return ("score", "verify", "pick")
    return STAGES


def scores_file(method: str) -> str | None:
    """The scores a method selects from: STAFF the speculative ones, the baselines the
    fine-tuned target's; Random and Length none (STAFF's in the same folder are not theirs)."""
    if method in ("random", "length"):
        return None
    return SCORES if method == "staff" else TARGET_SCORES


def rate_dir(rate: float) -> str:
    return f"p{rate:.2f}"


def selections_dir(run_dir: str | Path, method: str = "staff") -> Path:
    """Where a method's coresets go. Each method has its own place, so that a baseline run in
    a STAFF run folder (the README's example: they share the fine-tuned target) never
    overwrites STAFF's coresets: STAFF, the default, writes selections/p0.50/..., another
    method selections/<method>/p0.50/... (a rate folder is named p*, never like a method)."""
    root = Path(run_dir) / SELECTIONS
    return root if method == "staff" else root / method


def report_name(method: str = "staff") -> str:
    """The report of a method's coresets: report.html for STAFF, report-<method>.html else."""
    return "report.html" if method == "staff" else f"report-{method}.html"
