"""The fine-tuning commands: finetune, evaluate and bench (the paper's evaluation protocol)."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import (DataOpt, DebugOpt, OutOpt, QuietOpt, SeedOpt, SetOpt, _run, _setup_logging,
                     app)

TrainConfigOpt = typer.Option(..., "--config", "-c", help="YAML with data, eval, model, lora, "
                              "finetune sections (see configs/bench/*.yaml for the sections' "
                              "use); unset fine-tuning options take the paper's recipe (4 "
                              "epochs, cosine, warm-up 0.1, batch 8, lr 2e-4).")
ModelOpt = typer.Option(None, "--model", help="Shortcut for --set model.name=...")


def _load_train_eval(config, sets, **shortcuts):
    from ..evaluation.config import load_train_eval_config

    overrides = list(sets or [])
    names = {"data": "data.path", "model": "model.name", "out": "output_dir", "seed": "seed"}
    overrides += [f"{names[k]}={v}" for k, v in shortcuts.items() if v is not None]
    return load_train_eval_config(config, overrides)


@app.command()
def finetune(config: str = TrainConfigOpt, set_: Optional[List[str]] = SetOpt,
             ids: Optional[str] = typer.Option(None, "--ids", help="Fine-tune on these sample "
                                               "ids only (a file, one id a line: a selection's "
                                               "selections/p0.90/ids.txt). Default: all of "
                                               "data.path."),
             data: Optional[str] = DataOpt, model: Optional[str] = ModelOpt,
             out: Optional[str] = OutOpt, seed: Optional[int] = SeedOpt,
             quiet: bool = QuietOpt, debug: bool = DebugOpt):
    """LoRA-fine-tune model.name on a coreset (--ids) or the full data: OUTPUT_DIR/adapter and
    history.json. Resumes an interrupted run; skipped when done with the same inputs."""
    _setup_logging(quiet)

    def action():
        from ..evaluation.run import TrainEval, read_ids

        cfg = _load_train_eval(config, set_, data=data, model=model, out=out, seed=seed)
        result = TrainEval(cfg, show_progress=not quiet).finetune(
            cfg.output_dir, read_ids(ids) if ids else None)
        info = result.info
        state = "already done" if result.skipped else f"{info['seconds']:.1f} s"
        loss = info.get("final_loss")
        typer.echo(f"adapter: {result.adapter_dir} ({info['samples']} samples, {state}"
                   + (f", final loss {loss:.4f})" if loss is not None else ")"))

    _run(action, debug)


@app.command()
def evaluate(config: str = TrainConfigOpt, set_: Optional[List[str]] = SetOpt,
             adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter folder to "
                                                   "evaluate. Default: OUTPUT_DIR/adapter (from "
                                                   "`staff finetune`)."),
             reference: bool = typer.Option(True, "--reference/--no-reference", help="Also "
                                            "evaluate the untuned model (no adapter), into "
                                            "OUTPUT_DIR/eval-untuned."),
             untuned_only: bool = typer.Option(False, "--untuned", help="Evaluate only the "
                                               "untuned model."),
             model: Optional[str] = ModelOpt, out: Optional[str] = OutOpt,
             quiet: bool = QuietOpt, debug: bool = DebugOpt):
    """Greedy generation on eval.path, ROUGE-L (F, x100) and BLEU-4 (sacreBLEU) against every
    reference: OUTPUT_DIR/eval/{metrics.json,predictions.jsonl}. Skipped when done with the
    same inputs."""
    _setup_logging(quiet)

    def action():
        from pathlib import Path

        from ..config import ConfigError
        from ..evaluation.run import TrainEval
        from ..runs.layout import CELL_ADAPTER, EVAL_DIR, METRICS, UNTUNED_EVAL_DIR

        cfg = _load_train_eval(config, set_, model=model, out=out)
        runner = TrainEval(cfg, show_progress=not quiet)
        root = Path(cfg.output_dir)
        jobs = []
        if not untuned_only:
            folder = Path(adapter) if adapter else root / CELL_ADAPTER
            if not folder.is_dir():
                raise ConfigError(f"no adapter at {folder}: run `staff finetune -c {config}` "
                                  "first, give --adapter, or use --untuned.")
            jobs.append(("tuned", folder, root / EVAL_DIR))
        if untuned_only or reference:
            jobs.append(("untuned", None, root / UNTUNED_EVAL_DIR))
        for name, folder, target in jobs:
            m = runner.evaluate(target, folder)
            typer.echo(f"{name}: ROUGE-L {m['rouge_l']:.2f}  BLEU-4 {m['bleu']:.2f}  "
                       f"({m['n']} samples) -> {target}/{METRICS}")

    _run(action, debug)


@app.command()
def bench(config: str = typer.Argument(..., help="Bench YAML, e.g. "
                                       "configs/bench/multi30k-quick.yaml."),
          set_: Optional[List[str]] = SetOpt,
          methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated "
                                                "subset of the grid's methods, e.g. "
                                                "staff,random."),
          rates: Optional[str] = typer.Option(None, "--rates", help="Comma-separated pruning "
                                              "rates, e.g. 0.5,0.9."),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds."),
          protocol: Optional[str] = typer.Option(None, "--protocol", help="epochs (the "
                                                 "recipe's epochs on the coreset) or steps "
                                                 "(the full-data cell's step count)."),
          parts: Optional[str] = typer.Option(None, "--parts", help="Comma-separated parts of "
                                              "the config to run (1-based), e.g. 1,2; "
                                              "processes running other parts may share the "
                                              "bench folder (one per GPU)."),
          tables_only: bool = typer.Option(False, "--tables-only", help="Only write "
                                           "tables.md and cells.csv again from results.json "
                                           "(e.g. after a run stopped mid-part)."),
          quiet: bool = QuietOpt, debug: bool = DebugOpt):
    """Benchmark grid: methods x pruning rates x seeds (select, fine-tune the target on each
    coreset, evaluate: held-out loss, and ROUGE-L / BLEU-4 where decoded), plus the full-data
    and untuned-target rows; writes results.json, cells.csv and tables.md (paper's Tables 1
    and 2, and paired differences with bootstrap intervals) in the config's output_dir. Every
    artifact is cached: run it again to resume; --methods/--rates/--seeds/--protocol run one
    part of the grid instead of the config's parts."""
    _setup_logging(quiet)

    def action():
        from ..bench import Grid, load_bench_config
        from ..config import ConfigError

        def split(text):
            return [t.strip() for t in text.split(",") if t.strip()] if text else None

        cfg = load_bench_config(config, set_)
        grid = Grid(cfg, show_progress=not quiet)
        if tables_only:
            if not grid.results_path.is_file():
                raise ConfigError(f"--tables-only: {grid.results_path} does not exist; run the "
                                  "bench first.")
            path = grid.write_tables()
            typer.echo(path.read_text(encoding="utf-8"))
            typer.echo(f"tables: {path}\ncells: {grid.out / 'cells.csv'}")
            return
        part_numbers = None
        if parts:
            try:
                part_numbers = [int(p) for p in split(parts)]
            except ValueError:
                raise ConfigError(f"--parts {parts!r}: give part numbers, e.g. 1,2.") from None
        grid.run(split(methods), split(rates), split(seeds), protocol, part_numbers)
        path = grid.out / "tables.md"
        typer.echo(path.read_text(encoding="utf-8"))
        typer.echo(f"tables: {path}\nresults: {grid.results_path}")

    _run(action, debug)
