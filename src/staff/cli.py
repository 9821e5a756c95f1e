"""The `staff` command. Thin: parse options, configure logging, call the pipeline.

Heavy imports (torch, transformers) happen inside the commands so that `--help` is instant.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="STAFF: speculative coreset selection for task-specific LLM fine-tuning.")

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML run config. Without it: the "
                         "embedded offline demo (SmolLM2-135M -> Gemma-3-270M on a generated "
                         "instruction dataset).")
SetOpt = typer.Option(None, "--set", "-s", help="Override an option: section.option=value "
                      "(repeatable), e.g. --set selection.regions=20.")
DataOpt = typer.Option(None, "--data", help="Shortcut for --set data.path=...")
SmallOpt = typer.Option(None, "--small", help="Shortcut for --set small.name=...")
TargetOpt = typer.Option(None, "--target", help="Shortcut for --set target.name=...")
OutOpt = typer.Option(None, "--out", "-o", help="Shortcut for --set output_dir=...")
RatesOpt = typer.Option(None, "--pruning-rates", "-p", help="Comma-separated rates, e.g. "
                        "0.5,0.7,0.9 (shortcut for selection.pruning_rates).")
SeedOpt = typer.Option(None, "--seed", help="Shortcut for --set seed=...")
MethodOpt = typer.Option(None, "--method", "-m", help="staff (default), random, length, grand, el2n, "
                         "ccs or d2 (shortcut for selection.method).")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or info lines.")


def _is_main_process() -> bool:
    """Under `accelerate launch` (torchrun) every process has a RANK; only rank 0 talks."""
    return int(os.environ.get("RANK", "0")) == 0


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet or not _is_main_process() else logging.INFO,
                        format="[staff] %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet:
        # Quiet means the libraries' progress bars ("Loading weights") and deprecation notices
        # too, so that an error is the only line on stderr. The variable is read when
        # huggingface_hub is imported; an already imported transformers is told directly.
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        # transformers' GGUF conversion uses tqdm directly; tqdm reads TQDM_* when imported.
        os.environ["TQDM_DISABLE"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _load(config, sets, data, small, target, out, rates, seed, method=None):
    from .config import load_config

    overrides = list(sets or [])
    for key, value in (("data.path", data), ("small.name", small), ("target.name", target),
                       ("output_dir", out), ("seed", seed), ("selection.method", method)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if rates:
        overrides.append(f"selection.pruning_rates=[{rates}]")
    return load_config(config, overrides)


def _run(action, debug: bool):
    """Bad input: one line on stderr, exit code 2, no traceback (unless --debug)."""
    try:
        return action()
    except KeyboardInterrupt:
        typer.echo("interrupted: finished stages are kept; run the same command to resume.",
                   err=True)
        raise typer.Exit(130)
    except (ValueError, OSError) as err:
        if debug:
            raise
        typer.echo(f"error: {_one_line(err)}", err=True)
        raise typer.Exit(2)


def _one_line(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        # str() would read "[Errno 2] No such file or directory: 'x'"; name the file first.
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    else:
        text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _print_result(result) -> None:
    if not _is_main_process():
        return
    from .runs.layout import CORESET, rate_dir, selections_dir

    typer.echo(f"run folder: {result.run_dir}")
    n = result.n_samples
    if result.method != "staff":
        typer.echo(f"  method: {result.method}")
    for p, ids in result.ids.items():
        folder = selections_dir(result.run_dir, result.method) / rate_dir(p)
        typer.echo(f"  p = {p:.2f}: coreset of {len(ids)} / {n} samples -> "
                   f"{folder}/{CORESET}")
    if result.report is not None and result.report.is_file():
        typer.echo(f"  report: {result.report}")
    ran = {k: v for k, v in result.timings.items() if k not in result.cached}
    if ran:
        typer.echo("  stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in ran.items()))
    if result.cached:
        # A re-run took seconds: its stages' first times would read as this run's cost.
        typer.echo(f"  cached (done before with the same inputs, not redone): "
                   f"{', '.join(result.cached)}")
        typer.echo(f"  selection overhead: {result.selection_overhead:.1f} s when first run "
                   "(timings.json)")
    else:
        typer.echo(f"  selection overhead: {result.selection_overhead:.1f} s")


@app.command()
def select(config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
           data: Optional[str] = DataOpt, small: Optional[str] = SmallOpt,
           target: Optional[str] = TargetOpt, out: Optional[str] = OutOpt,
           pruning_rates: Optional[str] = RatesOpt, seed: Optional[int] = SeedOpt,
           method: Optional[str] = MethodOpt, quiet: bool = QuietOpt, debug: bool = DebugOpt):
    """Run every stage (fine-tune small, score, verify on target, pick); finished stages are
    skipped when the same config runs again. --method picks a baseline instead."""
    _setup_logging(quiet)

    def action():
        from .pipeline import Pipeline

        cfg = _load(config, set_, data, small, target, out, pruning_rates, seed, method)
        _print_result(Pipeline(cfg, show_progress=not quiet and _is_main_process()).run_all())

    _run(action, debug)


def _stage_command(stage: str, doc: str):
    def command(config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                data: Optional[str] = DataOpt, small: Optional[str] = SmallOpt,
                target: Optional[str] = TargetOpt, out: Optional[str] = OutOpt,
                pruning_rates: Optional[str] = RatesOpt, seed: Optional[int] = SeedOpt,
                method: Optional[str] = MethodOpt, quiet: bool = QuietOpt,
                debug: bool = DebugOpt):
        _setup_logging(quiet)

        def action():
            from .pipeline import Pipeline

            cfg = _load(config, set_, data, small, target, out, pruning_rates, seed, method)
            _print_result(Pipeline(cfg, show_progress=not quiet and _is_main_process()
                                   ).run_stage(stage))

        _run(action, debug)

    command.__doc__ = doc
    app.command(name=stage)(command)


_stage_command("train-small", "Redo stage 1: LoRA fine-tuning of the small model (then the rest).")
_stage_command("score", "Redo stage 2: effort scores on the fine-tuned small model (then the rest).")
_stage_command("verify", "Redo stage 3a: regions and target verification (then pick).")
_stage_command("pick", "Redo only the final pick, e.g. for new pruning rates: "
                       "staff pick -c run.yaml -p 0.8,0.95.")


@app.command("show-config")
def show_config(config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML run "
                                                     "config to resolve (with --set)."),
                set_: Optional[List[str]] = SetOpt,
                demo: bool = typer.Option(False, "--demo", help="The embedded demo's config "
                                          "(what `staff select` without -c runs)."),
                debug: bool = DebugOpt):
    """Print a config as YAML: with -c the resolved one; with --demo the embedded demo's;
    without either every option's library default, with its help (a file to start from)."""

    def action():
        from .config import dump_config, dump_defaults, load_config

        if config is None and not demo:
            if set_:
                raise ValueError("--set needs -c FILE or --demo: the library defaults have no "
                                 "data.path or model names to resolve against.")
            typer.echo(dump_defaults(), nl=False)
            return
        typer.echo(dump_config(load_config(config, set_)), nl=False)

    _run(action, debug)


@app.command()
def report(run_folder: str = typer.Argument(..., help="A finished run folder (it holds "
                                            "selections/summary.json)."),
           quiet: bool = QuietOpt, debug: bool = DebugOpt):
    """Write RUN_FOLDER/report.html: scores, regions, small-vs-target agreement, coreset
    composition and stage times, in one page with the figures embedded; prints its path."""
    _setup_logging(quiet)

    def action():
        from .report import build_reports

        for path in build_reports(run_folder):  # one per method with coresets in the folder
            typer.echo(str(path))

    _run(action, debug)


@app.command()
def export(run_folder: str = typer.Argument(..., help="A finished run folder."),
           pruning_rate: float = typer.Option(..., "--pruning-rate", "-p", help="The coreset's "
                                              "pruning rate, e.g. 0.5."),
           llama_factory: str = typer.Option(..., "--llama-factory", help="LLaMA-Factory's "
                                             "dataset folder (dataset_dir, default ./data): the "
                                             "coreset goes in as NAME.jsonl and is registered "
                                             "in its dataset_info.json."),
           method: Optional[str] = MethodOpt,
           name: Optional[str] = typer.Option(None, "--name", help="Dataset name in "
                                              "dataset_info.json (default: "
                                              "RUNFOLDER_METHOD_pRATE)."),
           debug: bool = DebugOpt):
    """Hand a coreset to LLaMA-Factory: write it into its dataset folder and add an entry to
    dataset_info.json (other entries kept); then train with `dataset: NAME`."""

    def action():
        from .export import export_llama_factory

        entry, path = export_llama_factory(run_folder, pruning_rate, llama_factory, method, name)
        typer.echo(f"{path}\n  dataset_info.json entry: {entry} (LLaMA-Factory: dataset: {entry})")

    _run(action, debug)


@app.command()
def draft(config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
          data: Optional[str] = DataOpt, target: Optional[str] = TargetOpt,
          out: Optional[str] = typer.Option(None, "--out", "-o", help="Shortcut for --set "
                                            "draft.output_dir=..."),
          keep_layers: Optional[int] = typer.Option(None, "--keep-layers", help="Shortcut for "
                                                    "--set draft.keep_layers=..."),
          heal_steps: Optional[int] = typer.Option(None, "--heal-steps", help="Shortcut for "
                                                   "--set draft.heal_steps=..."),
          seed: Optional[int] = SeedOpt, quiet: bool = QuietOpt, debug: bool = DebugOpt):
    """Derive a smaller model of the target's family for STAFF's small model: remove the
    decoder layers that change their input least on the task's prompts, heal the rest by
    distillation from the target, save a model folder for `staff select --small FOLDER`.
    Uses the config's data, target, seed and draft sections."""
    _setup_logging(quiet)

    def action():
        from .draft.run import make_draft

        extra = [f"draft.{k}={v}" for k, v in (("output_dir", out), ("keep_layers", keep_layers),
                                               ("heal_steps", heal_steps)) if v is not None]
        cfg = _load(config, list(set_ or []) + extra, data, None, target, None, None, seed)
        record = make_draft(cfg, show_progress=not quiet)
        loss = record["response_loss_held_out"]
        typer.echo(f"draft: {cfg.draft.output_dir}\n"
                   f"  layers: {len(record['layers']['kept'])} of {record['layers']['target']} "
                   f"kept ({record['parameters']['draft'] / 1e6:.1f}M of "
                   f"{record['parameters']['target'] / 1e6:.1f}M parameters)\n"
                   f"  held-out response loss: target {loss['target']:.3f}, pruned "
                   f"{loss['pruned']:.3f}, healed {loss['healed']:.3f}\n"
                   f"  took {record['seconds']:.0f} s; use it: staff select --small "
                   f"{cfg.draft.output_dir}")

    _run(action, debug)


# ----------------------------------------------------------------------------- fine-tune & evaluate

TrainConfigOpt = typer.Option(..., "--config", "-c", help="YAML with data, eval, model, lora, "
                              "finetune sections (see configs/bench/*.yaml for the sections' "
                              "use); unset fine-tuning options take the paper's recipe (4 "
                              "epochs, cosine, warm-up 0.1, batch 8, lr 2e-4).")
ModelOpt = typer.Option(None, "--model", help="Shortcut for --set model.name=...")


def _load_train_eval(config, sets, **shortcuts):
    from .evaluation.config import load_train_eval_config

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
        from .evaluation.run import TrainEval, read_ids

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

        from .config import ConfigError
        from .evaluation.run import TrainEval

        cfg = _load_train_eval(config, set_, model=model, out=out)
        runner = TrainEval(cfg, show_progress=not quiet)
        root = Path(cfg.output_dir)
        jobs = []
        if not untuned_only:
            folder = Path(adapter) if adapter else root / "adapter"
            if not folder.is_dir():
                raise ConfigError(f"no adapter at {folder}: run `staff finetune -c {config}` "
                                  "first, give --adapter, or use --untuned.")
            jobs.append(("tuned", folder, root / "eval"))
        if untuned_only or reference:
            jobs.append(("untuned", None, root / "eval-untuned"))
        for name, folder, target in jobs:
            m = runner.evaluate(target, folder)
            typer.echo(f"{name}: ROUGE-L {m['rouge_l']:.2f}  BLEU-4 {m['bleu']:.2f}  "
                       f"({m['n']} samples) -> {target}/metrics.json")

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
        from .bench import Grid, load_bench_config
        from .config import ConfigError

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


def main(argv: list[str] | None = None) -> None:
    """The `staff` command. A usage error (unknown option, missing value) is one line on stderr
    and exit code 2 like every other error, not click's framed box of five."""
    try:
        code = app(args=argv, prog_name="staff", standalone_mode=False)
    except Exception as err:
        # By class name: typer >= 0.20 carries its own copy of click's exceptions.
        kinds = {cls.__name__ for cls in type(err).__mro__}
        if "NoArgsIsHelpError" in kinds:  # `staff` alone: the help, as before
            err.show()
            sys.exit(err.exit_code)
        if "UsageError" in kinds:
            where = err.ctx.command_path if getattr(err, "ctx", None) else "staff"
            typer.echo(f"error: {err.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        if "ClickException" in kinds:
            typer.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        if "Abort" in kinds:
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
