"""The selection commands: select, the stage re-runs, show-config, report, export, draft."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import (ConfigOpt, DataOpt, DebugOpt, MethodOpt, OutOpt, QuietOpt, RatesOpt,
                     SeedOpt, SetOpt, SmallOpt, TargetOpt, _is_main_process, _load, _run,
                     _setup_logging, app)


def _length_line(scores, ids) -> str:
    """How long the coreset's responses are against the data's and a random draw's: effort
    favours short responses, and a model tuned on them answers shorter (BENCHMARKS.md)."""
    import numpy as np

    from ..report.numbers import random_mean_range

    if "n_response_tokens" not in scores or len(scores) < 2:
        return ""
    tokens = scores["n_response_tokens"].to_numpy(dtype=float)
    kept = scores.set_index(scores["id"].astype(str)).reindex(ids)["n_response_tokens"].dropna()
    if kept.empty or np.ptp(tokens) == 0:
        return ""
    low, high = random_mean_range(tokens, len(kept))
    mean = tokens.mean()
    return (f"           responses {kept.mean() / mean:.2f}x the data's length "
            f"(a random draw: {low / mean:.2f}-{high / mean:.2f}x)")


def _print_result(result) -> None:
    if not _is_main_process():
        return
    from ..runs.layout import CORESET, rate_dir, selections_dir

    typer.echo(f"run folder: {result.run_dir}")
    n = result.n_samples
    if result.method != "staff":
        typer.echo(f"  method: {result.method}")
    for p, ids in result.ids.items():
        folder = selections_dir(result.run_dir, result.method) / rate_dir(p)
        typer.echo(f"  p = {p:.2f}: coreset of {len(ids)} / {n} samples -> "
                   f"{folder}/{CORESET}")
        line = _length_line(result.scores, ids)
        if line:
            typer.echo(line)
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
        from ..pipeline import Pipeline

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
            from ..pipeline import Pipeline

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
        from ..config import dump_config, dump_defaults, load_config

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
        from ..report import build_reports

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
        from ..export import export_llama_factory

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
        from ..draft.run import make_draft

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
