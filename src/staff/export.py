"""A coreset handed on to LLaMA-Factory: its rows as a JSON Lines file in LLaMA-Factory's data
folder, and an entry in that folder's ``dataset_info.json`` that maps the rows' fields onto
LLaMA-Factory's ``alpaca`` or ``sharegpt`` formatting (its data/README.md documents both), so
that ``dataset: NAME`` in a LLaMA-Factory training config trains on the coreset.

Rows keep their fields when LLaMA-Factory can read them as they are (alpaca, prompt/completion,
chat messages); rows of ``data.format: template`` are written rendered, as alpaca rows
(instruction = the formatted prompt, output = the formatted response), since LLaMA-Factory has
no templates over arbitrary fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from .runs.layout import CONFIG, CORESET, rate_dir, selections_dir
from .runs.result import load_result
from .runs.folder import write_atomic, write_json


class ExportError(ValueError):
    """The coreset cannot be exported; the message names the file or option."""


def export_llama_factory(run_dir: str | Path, pruning_rate: float, dataset_dir: str | Path,
                         method: str | None = None, name: str | None = None) -> tuple[str, Path]:
    """Write the coreset at ``pruning_rate`` into ``dataset_dir`` and register it in
    ``dataset_dir/dataset_info.json`` (other entries kept). Returns (entry name, data file)."""
    import yaml

    from .config import config_from_dict
    from .data.examples import detect_format, to_examples

    run = Path(run_dir)
    result = load_result(run, method)
    if pruning_rate not in result.ids:
        raise ExportError(f"{run}: no coreset at pruning rate {pruning_rate} for method "
                          f"{result.method} (has {', '.join(f'{p:g}' for p in result.ids)}).")
    source = selections_dir(run, result.method) / rate_dir(pruning_rate) / CORESET
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line]
    data_cfg = config_from_dict(yaml.safe_load((run / CONFIG).read_text("utf-8"))).data
    fmt = detect_format(rows[0], str(source)) if data_cfg.format == "auto" else data_cfg.format
    name = name or f"{run.name}_{result.method}_{rate_dir(pruning_rate)}"
    entry: dict = {"file_name": f"{name}.jsonl"}
    if fmt == "alpaca":
        entry.update(formatting="alpaca",
                     columns={"prompt": "instruction", "query": "input", "response": "output"})
    elif fmt == "prompt_completion":
        response = next(f for f in ("completion", "response", "output") if f in rows[0])
        entry.update(formatting="alpaca", columns={"prompt": "prompt", "response": response})
    elif fmt == "messages":
        field = "messages" if "messages" in rows[0] else "conversations"
        first = rows[0][field][0]
        role, content = ("role", "content") if "role" in first else ("from", "value")
        roles = {m[role] for r in rows for m in r[field]}
        user, assistant = ("user", "assistant") if "assistant" in roles else ("human", "gpt")
        entry.update(formatting="sharegpt", columns={"messages": field},
                     tags={"role_tag": role, "content_tag": content, "user_tag": user,
                           "assistant_tag": assistant, "system_tag": "system"})
    else:  # template: rendered, since LLaMA-Factory has no templates over arbitrary fields
        rows = [{"id": e.id, "instruction": e.prompt, "output": e.response}
                for e in to_examples(rows, data_cfg, source=str(source))]
        entry.update(formatting="alpaca", columns={"prompt": "instruction", "response": "output"})
    folder = Path(dataset_dir)
    info_path = folder / "dataset_info.json"
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ExportError(f"{info_path}: not valid JSON ({err}); fix or remove it.") from None
    data_file = folder / entry["file_name"]
    write_atomic(data_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    info[name] = entry
    write_json(info_path, info)
    return name, data_file
