"""A run is a folder. Files appear atomically (write to a temporary name, then rename), and
``state.json`` records which stages finished, with what inputs (a fingerprint) and how long
they took, so that re-running the same config skips finished stages."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import yaml

from .layout import CONFIG, STATE


class RunFolderError(ValueError):
    """The run folder cannot be written; the message names it."""


def fingerprint(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", **open_kwargs):
    """Open a temporary file beside ``path`` for writing; when the ``with`` body ends cleanly it
    is flushed, synced and renamed over ``path``. On any error the temporary file is removed and
    ``path`` keeps its old content (or stays absent): readers never see half a file. The
    temporary name ends in the writer's pid, so ``RunFolder.remove_partial`` can tell a killed
    writer's leftovers from a live one's. OSErrors propagate; callers name the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    try:
        with atomic_open(path) as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as err:
        raise RunFolderError(f"cannot write {path}: {err.strerror or err}") from None


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=float) + "\n")


def write_table(path: Path, frame) -> None:
    write_atomic(path, frame.to_csv(index=False))


def read_table(path: Path):
    """A table written by ``write_table``, with sample ids kept as written: pandas would read
    ids such as "NA", "null" or "nan" as missing values, and "007" as the number 7."""
    import pandas as pd

    columns = pd.read_csv(path, nrows=0).columns
    missing = {c: ["", "nan", "NaN"] for c in columns if c != "id"}
    return pd.read_csv(path, dtype={"id": str} if "id" in columns else None,
                       keep_default_na=False, na_values=missing)


def write_dir_atomic(final: Path, write) -> None:
    """``write(folder)`` fills a temporary folder, which is then renamed to ``final``; on an
    error the temporary folder is removed and the error names ``final``. For a stage's output:
    a kill between the renames leaves no ``final``, and the stage, not marked done, is redone
    (checkpoints, which nothing re-creates, use ``replace_dir``)."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)
        if isinstance(err, RunFolderError):  # name the file where it was going, not the tmp
            raise RunFolderError(str(err).replace(str(tmp), str(final))) from None
        reason = write_failure(err, final.parent)
        if reason:
            raise RunFolderError(f"cannot write {final}: {reason}") from None
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_failure(err: BaseException, folder: Path) -> str | None:
    """The reason, in a few words, when ``err`` is a failed write (a full disk, typically), or
    None. safetensors and torch.save do not raise OSError for it: a SafetensorError holding
    "No space left on device", a RuntimeError "... file write failed"."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    text = str(err)
    if "No space left" in text or "StorageFull" in text:
        return os.strerror(errno.ENOSPC)
    if isinstance(err, RuntimeError) or type(err).__name__ == "SafetensorError":
        if re.search(r"write failed|failed writing|IoError", text):
            with contextlib.suppress(OSError):
                if shutil.disk_usage(folder).free < 2**20:
                    return os.strerror(errno.ENOSPC)
            return "the write failed (" + (text.strip().splitlines() or ["?"])[0][:120] + ")"
    return None


def replace_dir(final: Path, write) -> None:
    """Replace a resumable checkpoint folder, which no stage marker vouches for (unlike
    ``write_dir_atomic``'s outputs): ``write(folder)`` fills ``final.tmp``, which is renamed into
    place. Killed at any moment, it leaves a complete ``final``, or (between the two renames) a
    complete ``final.old``, which ``recover_dir`` puts back before the checkpoint is read."""
    recover_dir(final)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except Exception as err:
        # The previous checkpoint is untouched: the run resumes from it once there is space.
        shutil.rmtree(tmp, ignore_errors=True)
        reason = write_failure(err, final.parent)
        if reason:
            raise RunFolderError(f"cannot write {final}: {reason}") from None
        raise
    old = final.with_name(final.name + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(final: Path) -> None:
    """Undo what a kill inside ``replace_dir`` left: a ``final.old`` next to ``final``
    (killed while removing it) would make the next rename fail with 'Directory not empty', so
    it goes; a ``final.old`` without ``final`` (killed between the renames) is the last
    complete copy, so it becomes ``final`` again."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)


# What write_atomic / write_dir_atomic leave behind when the process is killed mid-write.
_PARTIAL = re.compile(r"^\..+\.(?:tmp|old)(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._state_path = self.path / STATE

    def create(self) -> None:
        """Make the folder (if needed) and check that it can be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create run folder {self.path}: "
                                 f"{err.strerror or err}") from None
        if not os.access(self.path, os.W_OK):
            raise RunFolderError(f"run folder {self.path} is not writable.")

    @contextlib.contextmanager
    def lock(self):
        """Hold the run folder exclusively while a run writes it. A second run in the same
        folder would otherwise interleave its writes with the first one's (two seeds: the last
        writer's coreset while the first exits 0). The lock is the OS's (filelock), so a killed
        holder releases it; who holds it is written beside it, for the second run's message."""
        from filelock import FileLock, Timeout

        lock, owner = FileLock(self.path / ".lock"), self.path / ".lock.owner"
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                holder = json.loads(owner.read_text())
                who = (f"process {holder['pid']} on {holder['host']} (since "
                       f"{holder['since']}: {holder['command']})")
            except (OSError, ValueError, KeyError):
                who = "another process"
            raise RunFolderError(f"run folder {self.path} is in use by {who}; wait for it to "
                                 "finish or use another output_dir.") from None
        try:
            write_json(owner, {"pid": os.getpid(), "host": socket.gethostname(),
                               "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "command": " ".join(sys.argv)[:200]})
            yield
        finally:
            lock.release()

    def remove_partial(self) -> list[Path]:
        """Remove the temporary files and folders of writers that were killed mid-write (their
        process is gone); finished files are never touched. Returns what was removed."""
        removed = []
        for path in sorted(self.path.rglob(".*")):
            match = _PARTIAL.match(path.name)
            if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def state(self) -> dict:
        if self._state_path.is_file():
            return json.loads(self._state_path.read_text())
        return {"stages": {}}

    def is_done(self, stage: str, fp: str) -> bool:
        entry = self.state["stages"].get(stage)
        return bool(entry) and entry.get("fingerprint") == fp

    def mark_done(self, stage: str, fp: str, seconds: float, **extra) -> None:
        state = self.state
        state["stages"][stage] = {"fingerprint": fp, "seconds": round(seconds, 3),
                                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
        write_json(self._state_path, state)

    def remember_data(self, fp: str, n: int) -> None:
        """Record the number of samples of the data with fingerprint ``fp``, so that a later
        ``pick`` from stored scores need not read and format the whole dataset again."""
        state = self.state
        if state.get("data") != {"fingerprint": fp, "n": n}:
            state["data"] = {"fingerprint": fp, "n": n}
            write_json(self._state_path, state)

    def data_size(self, fp: str) -> int | None:
        data = self.state.get("data") or {}
        return data.get("n") if data.get("fingerprint") == fp else None

    def forget(self, *stages: str) -> None:
        state = self.state
        for stage in stages:
            state["stages"].pop(stage, None)
        write_json(self._state_path, state)

    def timings(self) -> dict[str, float]:
        return {k: v["seconds"] for k, v in self.state["stages"].items()}

    def write_config(self, cfg) -> None:
        write_atomic(self.path / CONFIG,
                     yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))


def use_scratch(folder: Path, fp: str) -> bool:
    """Make ``folder`` the resumable work (checkpoints, score shards) of inputs ``fp``: work a
    killed run left with other inputs is discarded first, since it would mix into this one.
    The fingerprint is kept in the folder (``SCRATCH_MARKER``). Returns whether work was
    discarded."""
    from .layout import SCRATCH_MARKER

    folder = Path(folder)
    marker = folder / SCRATCH_MARKER
    discard = folder.exists() and not (marker.is_file() and marker.read_text().strip() == fp)
    if discard:
        shutil.rmtree(folder)
    write_atomic(marker, fp + "\n")
    return discard
