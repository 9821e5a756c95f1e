"""Run config: YAML + overrides, unknown keys and bad values named in one line."""

from __future__ import annotations

import pytest

from staff.config import ConfigError, load_config


def test_embedded_default_is_the_offline_demo():
    cfg = load_config(None)
    assert cfg.data.path == "demo"
    assert cfg.small.name == "offline:smollm2-135m-instruct"
    assert cfg.target.name == "offline:gemma-3-270m"
    assert cfg.selection.method == "staff"


def test_overrides_are_typed_and_strings_stay_strings():
    cfg = load_config(None, ["selection.regions=20", "selection.pruning_rates=[0.3, 0.9]",
                             "data.format=template", "data.prompt_template=English: {en}",
                             "data.response_template= {de}", "report.composition_field=null"])
    assert cfg.selection.regions == 20
    assert cfg.selection.pruning_rates == [0.3, 0.9]
    assert cfg.data.prompt_template == "English: {en}"
    assert cfg.report.composition_field is None


@pytest.mark.parametrize("override, message", [
    ("selection.regionz=3", "unknown option selection.regionz"),
    ("selection.pruning_rates=[1.2]", "selection.pruning_rates contains 1.2, must be in (0, 1)."),
    ("selection.pruning_rates=0", "selection.pruning_rates contains 0.0, must be in (0, 1)."),
    ("selection.method=best", "selection.method == 'best', must be one of"),
    ("selection.regions=2.5", "selection.regions == 2.5, must be an integer."),
    ("scoring.scope=half", "scoring.scope == 'half', must be one of 'all', 'last-layer'."),
    ("lora.r=0", "lora.r == 0, must be >= 1."),
    ("data.cutoff_len=4", "data.cutoff_len == 4, must be >= 8."),
    ("novel=1", "unknown option novel"),
    ("early_stop.rho=1", "early_stop.rho == 1.0, must be in [0, 1) (0: off)."),
    ("early_stop.probe=3", "early_stop.probe == 3, must be >= 10."),
])
def test_bad_options_are_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_authors_preset_sets_every_authors_option_and_explicit_values_win():
    from staff.config import load_config

    cfg = load_config(None, ["preset=authors", "selection.hard_prune=0.2"])
    s = cfg.selection
    assert (s.normalize, s.budget_rule, s.within_region, s.verify_small_regions, s.fill,
            s.boundary, cfg.scoring.scope) == ("minmax", "share", "top", False, "uniform",
                                               "lower", "last-layer")
    assert s.hard_prune == 0.2
    default = load_config(None).selection
    assert (default.fill, default.boundary, default.normalize) == ("weighted", "upper", "mean")
    # The resolved config.yaml of a run reloads to the same config.
    from staff.config import config_from_dict
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"preset == 'paperish', must be one of 'none', "
                                         r"'authors'"):
        load_config(None, ["preset=paperish"])


def test_cli_shortcuts_arrive_as_typed_values_and_win_over_set():
    # The CLI's -p and --seed are parsed once, in the CLI, and handed to the config as values
    # (not re-read as YAML text); a shortcut wins over a --set of the same option.
    from staff.cli.common import _load

    cfg = _load(None, ["selection.pruning_rates=[0.3]", "seed=3", "selection.regions=7"],
                None, None, None, None, "0.6, 0.8", 5)
    assert cfg.selection.pruning_rates == [0.6, 0.8]
    assert cfg.seed == 5
    assert cfg.selection.regions == 7
    # A --set string option keeps its raw text (not parsed as a YAML mapping).
    cfg = _load(None, ["data.prompt_template=English: {en}"], None, None, None, None, None, None)
    assert cfg.data.prompt_template == "English: {en}"


@pytest.mark.parametrize("value", [1, -2])
def test_length_strata_is_off_or_at_least_two(value):
    with pytest.raises(ConfigError, match=rf"selection.length_strata == {value}, must be 0 "
                                          r"\(off\) or >= 2."):
        load_config(None, {"selection.length_strata": value})
