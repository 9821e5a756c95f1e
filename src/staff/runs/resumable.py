"""A checkpointed loop (fine-tuning, healing) that a killed process resumes.

The checkpoint is a folder in the stage's scratch work, replaced whole (``folder.replace_dir``):
``state.json`` holds the step and the history so far, ``trainer.pt`` the optimiser, the
schedule and torch's generator (and whatever weights the loop saves there itself). The history
carries the seconds spent so far, so that a resumed run reports about what an uninterrupted one
would (the paper's Table 2): each kept step is counted once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .folder import recover_dir, replace_dir

CHECKPOINT = "checkpoint"     # in the scratch folder
CHECKPOINT_STATE = "state.json"
TRAINER = "trainer.pt"


def checkpoint_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / CHECKPOINT


def recover(ckpt: Path) -> None:
    """Undo what a kill inside ``save`` left behind (one process only)."""
    recover_dir(ckpt)


def saved(ckpt: Path) -> bool:
    return (ckpt / CHECKPOINT_STATE).is_file()


def save(ckpt: Path, step: int, history: dict, optimizer, scheduler, weights=None,
         write=None) -> None:
    """Replace the checkpoint: ``weights`` (a tensor dict) go into trainer.pt; ``write(folder)``
    adds anything else (a PEFT adapter)."""
    import torch

    def fill(folder: Path) -> None:
        if write is not None:
            write(folder)
        trainer = {} if weights is None else {"weights": weights}
        trainer.update({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state()})
        torch.save(trainer, folder / TRAINER)
        (folder / CHECKPOINT_STATE).write_text(json.dumps({"step": step, "history": history}))

    replace_dir(ckpt, fill)


def load(ckpt: Path, optimizer, scheduler) -> tuple[int, dict, dict]:
    """(step, history, trainer.pt's contents), the optimiser, schedule and generator restored."""
    import torch

    state = json.loads((ckpt / CHECKPOINT_STATE).read_text())
    trainer = torch.load(ckpt / TRAINER, weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["torch_rng"])
    return state["step"], state["history"], trainer


class Clock:
    """Seconds spent on a loop, with those of the interrupted processes before it."""

    def __init__(self, history: dict):
        self.earlier = float(history.get("seconds", 0.0))  # checkpoints before 0.2 lack it
        self.started = time.perf_counter()

    def stamp(self, history: dict) -> None:
        history["seconds"] = self.earlier + time.perf_counter() - self.started

    def close(self, history: dict) -> dict:
        self.stamp(history)
        history["seconds_before_resume"] = self.earlier
        return history
