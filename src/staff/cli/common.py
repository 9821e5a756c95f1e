"""What every `staff` command shares: the app, the common options, logging, config loading
and the one-line errors."""

from __future__ import annotations

import logging
import os
import sys
import warnings

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


def _parse_rates(text: str) -> list[float]:
    """'0.5,0.7,0.9' -> [0.5, 0.7, 0.9]; the range (0, 1) is checked once, by the config."""
    rates = []
    for part in text.split(","):
        try:
            rates.append(float(part))
        except ValueError:
            raise ValueError(f"--pruning-rates: {part.strip()!r} is not a number "
                             "(give e.g. -p 0.5,0.7,0.9).") from None
    return rates


def _load(config, sets, data, small, target, out, rates, seed, method=None):
    """The run config: the file (or the demo), then --set, then the shortcut options. The
    shortcuts go in as typed values (a list of floats, an int), not as YAML text to re-parse."""
    from ..config import load_config, parse_override

    overrides = dict(parse_override(text) for text in sets or [])
    for key, value in (("data.path", data), ("small.name", small), ("target.name", target),
                       ("output_dir", out), ("seed", seed), ("selection.method", method)):
        if value is not None:
            overrides.pop(key, None)  # a shortcut wins over a --set of the same option
            overrides[key] = value
    if rates:
        overrides.pop("selection.pruning_rates", None)
        overrides["selection.pruning_rates"] = _parse_rates(rates)
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
