"""Does a `staff draft` stand in for its target? (issue 9)

    python bench/draft_agreement.py configs/bench/multi30k-draft.yaml \
        --target-scores-from configs/bench/multi30k.yaml

Measures, on the bench config's selection data:
  * agreement after STAFF's stage 1: the draft's effort scores (draft fine-tuned with LoRA on
    the task, then scored: the bench's own STAFF run) against the target's (fine-tuned the same
    way and scored: the baselines' train-target / score-target) on every sample: Spearman's rho,
    and the Rand index of the K regions each model's scores induce (paper Table 18: >= 0.92
    for official pairs), beside its chance level (the target's scores shuffled) and the
    adjusted Rand index;
  * cost: one LoRA fine-tuning pass (forward + backward, the same batches) of the draft vs the
    target, median of --repeats, interleaved.
The target's scores come from --target-scores-from's baselines folder when that config has the
same data, target and recipe (its stages are reused, or run there and shared with its grid).
Prints a JSON summary and writes it to the bench's output_dir/draft_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="bench config whose select.small is the draft")
    ap.add_argument("--target-scores-from", help="bench config whose baselines folder holds "
                    "the fine-tuned target's scores (default: the same config)")
    ap.add_argument("--k", type=int, default=50, help="regions for the Rand index")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cost-samples", type=int, default=64)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[agreement] %(message)s")

    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score, rand_score

    from staff.bench.config import load_bench_config
    from staff.pipeline import Pipeline
    from staff.report.numbers import region_labels
    from staff.runs.folder import read_table, write_json

    bench = load_bench_config(args.config)
    seed, rates = bench.seeds[0], bench.pruning_rates
    draft_run = Pipeline(bench.selection_config("staff", seed, rates))
    draft_run.run_all()
    other = load_bench_config(args.target_scores_from or args.config)
    target_cfg = other.selection_config("grand", seed, rates)
    mine = bench.selection_config("grand", seed, rates)
    target_run = Pipeline(target_cfg)
    if target_run.fingerprints()["score-target"] != Pipeline(mine).fingerprints()["score-target"]:
        raise SystemExit(f"{args.target_scores_from}: its target, data or recipe differ from "
                         f"{args.config}'s; its target scores do not apply.")
    target_run.run_all()

    small = read_table(draft_run.run / "scores.csv").set_index("id")["effort"]
    target = read_table(target_run.run / "target_scores.csv").set_index("id")["effort"]
    small = small.loc[target.index].to_numpy(float)
    target = target.to_numpy(float)
    rho = float(spearmanr(small, target).statistic)
    regions = region_labels(target, args.k)
    rand = float(rand_score(region_labels(small, args.k), regions))
    # What the Rand index gives by chance: with K equal-width regions over skewed scores most
    # pairs fall in different regions under any scoring, so it starts high. The adjusted Rand
    # index corrects for that (0 = chance).
    rng = np.random.default_rng(0)
    chance = float(np.mean([rand_score(region_labels(rng.permutation(target), args.k), regions)
                            for _ in range(20)]))
    adjusted = float(adjusted_rand_score(region_labels(small, args.k), regions))

    draft_cfg = bench.select.small
    cost = training_pass_cost(draft_cfg, bench.select.target, bench.select, args.cost_samples,
                              args.repeats)
    summary = {"config": args.config, "draft": draft_cfg.name, "target": bench.select.target.name,
               "samples": len(target), "spearman_rho": round(rho, 4),
               f"rand_index_k{args.k}": round(rand, 4),
               f"rand_index_k{args.k}_shuffled_target": round(chance, 4),
               f"adjusted_rand_index_k{args.k}": round(adjusted, 4), **cost,
               "stage1_seconds": {"draft": draft_run.run.timings().get("train-small"),
                                  "target": target_run.run.timings().get("train-target")}}
    draft_json = Path(draft_cfg.name) / "draft.json"
    if draft_json.is_file():
        record = json.loads(draft_json.read_text())
        summary["draft_record"] = {k: record[k] for k in
                                   ("layers", "response_loss_held_out", "seconds", "parameters")}
    write_json(Path(bench.output_dir) / "draft_agreement.json", summary)
    print(json.dumps(summary, indent=2))


def training_pass_cost(draft_cfg, target_cfg, select, n: int, repeats: int) -> dict:
    """Seconds of one LoRA fine-tuning pass (HF loss forward + backward over the same
    length-bucketed batches) on the draft and on the target, interleaved; median of repeats."""
    from speed import plain_training_pass, timed_side_by_side

    from staff.data import load_rows, to_examples, tokenize_examples
    from staff.models.adapters import attach_lora
    from staff.models.loading import load_model, load_tokenizer, pick_device

    device = pick_device(select.device)
    tokenizer = load_tokenizer(target_cfg)
    rows = load_rows(select.data)[:n]
    samples = tokenize_examples(to_examples(rows, select.data), tokenizer, select.data)
    models = {name: attach_lora(load_model(cfg, device), select.lora, 0)
              for name, cfg in (("draft", draft_cfg), ("target", target_cfg))}
    pad = tokenizer.pad_token_id
    for model in models.values():  # warm-up
        plain_training_pass(model, samples[:8], pad, select.finetune.batch_size, "all")
    seconds = timed_side_by_side(
        {name: (lambda m=m: plain_training_pass(m, samples, pad, select.finetune.batch_size,
                                                "all")) for name, m in models.items()}, repeats)
    return {"training_pass_seconds": {k: round(v, 2) for k, v in seconds.items()},
            "cost_ratio_draft_over_target": round(seconds["draft"] / seconds["target"], 3),
            "cost_samples": len(samples)}


if __name__ == "__main__":
    main()
