"""Speed benchmark of effort scoring, measured side by side in one run (issue 5).

    python bench/speed.py                       # SmolLM2-135M, Multi30k en->de, 64 samples
    python bench/speed.py --n 128 --repeats 5

Compares, on the same model and samples, median of --repeats runs each:
  (a) batched effort scoring vs a one-sample-at-a-time loop (the authors' way: batch size 1,
      Hugging Face's full forward with labels, one backward per sample);
  (b) batched effort scoring vs one plain fine-tuning pass (forward + backward of the standard
      HF loss over the same length-bucketed batches: the floor);
  (c) scope `last-layer` vs `all`;
  (d) target work: samples scored with verification (K·b_v) vs all N.
Prints a markdown table of seconds, samples/s, tokens/s and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from staff.config import DataConfig, LoraConfig, ModelConfig
from staff.data import load_rows, to_examples, tokenize_examples
from staff.models.adapters import attach_lora
from staff.models.loading import load_model, load_tokenizer
from staff.training.batching import collate, length_sorted_batches, padding_fraction
from staff.scoring.engine import lora_linears, score_samples, set_trainable

MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k" / "train.jsonl"


def one_sample_loop(model, samples, scope: str) -> np.ndarray:
    """The reference way: for each sample its own forward (full logits) and backward."""
    modules = lora_linears(model, scope)
    set_trainable(model, modules)
    params = [p for _, m in modules for p in m.parameters()]
    norms = []
    for s in samples:
        model.zero_grad(set_to_none=True)
        out = model(input_ids=torch.tensor([s.input_ids]), labels=torch.tensor([s.labels]))
        out.loss.backward()
        norms.append(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params)).item())
    return np.array(norms)


def plain_training_pass(model, samples, pad_id: int, batch_size: int, scope: str) -> None:
    """The floor: one forward + backward of the standard HF loss per batch, no per-sample work."""
    set_trainable(model, lora_linears(model, scope))
    lengths = np.array([len(s.input_ids) for s in samples])
    for index in length_sorted_batches(lengths, batch_size):
        batch = collate([samples[i] for i in index], pad_id)
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()


def timed_side_by_side(fns: dict, repeats: int) -> dict:
    """Median seconds of each function; repeats are interleaved (a, b, c, a, b, c, ...) so that
    a change in machine load hits every contender alike."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="offline:smollm2-135m-instruct")
    ap.add_argument("--data", default=str(MULTI30K))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--regions", type=int, default=50)
    ap.add_argument("--verify-per-region", type=int, default=10)
    ap.add_argument("--full-n", type=int, default=29000, help="N for the (d) row: Multi30k train")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    data_cfg = DataConfig(path=args.data, format="template", max_samples=args.n,
                          prompt_template="Translate English to German.\nEnglish: {en}\nGerman:",
                          response_template=" {de}", cutoff_len=256)
    model_cfg = ModelConfig(name=args.model)
    tokenizer = load_tokenizer(model_cfg)
    samples = tokenize_examples(to_examples(load_rows(data_cfg), data_cfg), tokenizer, data_cfg)
    model = attach_lora(load_model(model_cfg, torch.device("cpu")),
                        LoraConfig(r=8, alpha=16, dropout=0.0), seed=0)
    with torch.no_grad():  # a tuned-looking adapter: B != 0, so every LoRA tensor has gradient
        g = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    model.eval()
    pad = tokenizer.pad_token_id
    lengths = np.array([len(s.input_ids) for s in samples])
    tokens = int(lengths.sum())
    pad_frac = padding_fraction(lengths, length_sorted_batches(lengths, args.batch_size))

    rows = []
    results = {}
    for scope in ("all", "last-layer"):
        batched = lambda: score_samples(model, samples, pad, batch_size=args.batch_size,
                                        scope=scope, show_progress=False)
        # Correctness first: the batched scores equal the loop's.
        ref = one_sample_loop(model, samples, scope)
        got = batched().effort
        err = float(np.max(np.abs(got - ref) / ref))
        t = timed_side_by_side({
            "batched": batched,
            "loop": lambda: one_sample_loop(model, samples, scope),
            "plain": lambda: plain_training_pass(model, samples, pad, args.batch_size, scope),
        }, args.repeats)
        t_batched, t_loop, t_plain = t["batched"], t["loop"], t["plain"]
        results[scope] = t_batched
        for name, t in ((f"batched effort [{scope}]", t_batched),
                        (f"one-sample loop [{scope}]", t_loop),
                        (f"plain fine-tuning pass [{scope}]", t_plain)):
            rows.append((name, t, len(samples) / t, tokens / t))
        print(f"scope {scope}: max relative difference batched vs loop = {err:.2e}", file=sys.stderr)
        results[f"loop/batched {scope}"] = t_loop / t_batched
        results[f"batched/plain {scope}"] = t_batched / t_plain

    print(f"\n{len(samples)} samples, {tokens} tokens ({tokens / len(samples):.1f} per sample), "
          f"batch size {args.batch_size}, padding {100 * pad_frac:.1f}% of token slots, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| run | seconds | samples/s | tokens/s |\n|---|---:|---:|---:|")
    for name, t, sps, tps in rows:
        print(f"| {name} | {t:.2f} | {sps:.1f} | {tps:.0f} |")
    print("\n| comparison | ratio | target |\n|---|---:|---|")
    for scope in ("all", "last-layer"):
        print(f"| (a) one-sample loop / batched [{scope}] | {results[f'loop/batched {scope}']:.2f}x | >= 1.5x |")
    for scope in ("all", "last-layer"):
        print(f"| (b) batched / plain fine-tuning pass [{scope}] | {results[f'batched/plain {scope}']:.2f}x | <= 1.15x |")
    print(f"| (c) batched all / batched last-layer | {results['all'] / results['last-layer']:.2f}x | |")
    kb = min(args.regions * args.verify_per_region, args.full_n)
    per_sample = results["all"] / len(samples)
    print(f"| (d) target samples, all N / K·b_v (N={args.full_n}, K={args.regions}, "
          f"b_v={args.verify_per_region}) | {args.full_n / kb:.1f}x "
          f"({args.full_n} vs {kb} samples; ~{args.full_n * per_sample / 60:.0f} vs "
          f"~{kb * per_sample / 60:.1f} min at the measured rate) | |")
    print(f"| padding share of token slots | {100 * pad_frac:.1f}% | < 10% |")


if __name__ == "__main__":
    main()
