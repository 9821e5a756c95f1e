"""What a draft's training pass costs against its target's (issue 19, items 1-2).

    python bench/draft_cost.py configs/draft/multi30k-smollm2.yaml --keep 8,10,12 --pairs 64

Builds, in memory and without healing (healing changes the weights, not the cost), the
target's drafts that keep 8 / 10 / 12 decoder layers (the same block-influence ranking as
`staff draft`), each with the full vocabulary and with the task's vocabulary
(draft.task_vocabulary), and times one LoRA training pass (forward + backward over the same
batches of the task's samples, the loss STAFF's stage 1 trains) of each, interleaved with the
target's, median of --repeats. Prints and writes a JSON summary (--out).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def training_pass(model, examples, pad_id, batch_size=8) -> float:
    from staff.training.batching import collate, length_sorted_batches
    from staff.training.losses import per_sample_losses

    model.train()
    started = time.perf_counter()
    for index in length_sorted_batches(np.array([len(e.input_ids) for e in examples]),
                                       batch_size):
        batch = collate([examples[i] for i in index], pad_id)
        per_sample_losses(model, batch).mean().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main(argv=None) -> None:
    from staff.config import load_config
    from staff.data import load_rows, to_examples, tokenize_examples
    from staff.draft.layers import block_influence, decoder_layers, drop_layers, layers_to_keep
    from staff.draft.run import _prompt_part
    from staff.draft.vocab import remap_examples, shrink_model, task_vocabulary
    from staff.models.adapters import attach_lora
    from staff.models.loading import load_model, load_tokenizer
    from staff.training.batching import collate, length_sorted_batches

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a draft config (data, target, draft sections)")
    ap.add_argument("--keep", default="8,10,12", help="decoder layers to keep, comma-separated")
    ap.add_argument("--pairs", type=int, default=64, help="task samples in the timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config overrides")
    ap.add_argument("--out", help="JSON summary path")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.set)
    examples = to_examples(load_rows(cfg.data), cfg.data, source=cfg.data.path)
    tokenizer = load_tokenizer(cfg.target)
    tokens = tokenize_examples(examples, tokenizer, cfg.data)
    vocab, _ = task_vocabulary(tokenizer, [t.input_ids for t in tokens])
    timed = tokens[:args.pairs]
    target = load_model(cfg.target, torch.device("cpu"))
    prompts = [_prompt_part(t) for t in tokens[:cfg.draft.calibration_samples]]
    batches = length_sorted_batches(np.array([len(p.input_ids) for p in prompts]), 8)
    influence = block_influence(target, (collate([prompts[i] for i in b],
                                                 tokenizer.pad_token_id) for b in batches))
    total = len(decoder_layers(target))
    models = {"target": (attach_lora(copy.deepcopy(target), cfg.lora, 0), timed,
                         tokenizer.pad_token_id)}
    for keep in (int(k) for k in args.keep.split(",")):
        kept = layers_to_keep(influence, keep)
        for cut in (False, True):
            draft = copy.deepcopy(target)
            drop_layers(draft, kept)
            data, pad = timed, tokenizer.pad_token_id
            if cut:
                shrink_model(draft, vocab)
                data, pad = remap_examples(timed, vocab), int(vocab.old_to_new[pad])
            name = f"{keep}/{total} layers, {'task' if cut else 'full'} vocabulary"
            models[name] = (attach_lora(draft, cfg.lora, 0), data, pad)
    seconds = {name: [] for name in models}
    for _ in range(args.repeats):           # interleaved: the machine's load hits all alike
        for name, (model, data, pad) in models.items():
            seconds[name].append(training_pass(model, data, pad))
    base = statistics.median(seconds["target"])
    summary = {"config": args.config, "pairs": len(timed), "repeats": args.repeats,
               "vocabulary": {"target": len(tokenizer), "task": vocab.size},
               "samples_in_data": len(tokens),
               "seconds_median": {k: round(statistics.median(v), 3) for k, v in seconds.items()},
               "cost_vs_target": {k: round(statistics.median(v) / base, 3)
                                  for k, v in seconds.items()}}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
