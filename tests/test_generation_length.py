"""bench/generation_length.py: ROUGE-L differences at equal output length, from constructed
predictions whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_bench_script



def load_script():
    return load_bench_script("generation_length")


def write_cell(bench: Path, method: str, seed: int, generated: list[int], reference: int,
               rouge: list[float]) -> None:
    folder = bench / "cells" / method / "p0.90" / f"s{seed}" / "eval"
    folder.mkdir(parents=True)
    rows = [{"id": f"t{i}", "prediction": " ".join(["w"] * g),
             "references": [" ".join(["r"] * reference)], "rouge_l": r}
            for i, (g, r) in enumerate(zip(generated, rouge))]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cell_lengths_counts_words_and_run_on_outputs(tmp_path):
    gl = load_script()
    write_cell(tmp_path, "random", 0, generated=[10, 21, 5, 30], reference=10,
               rouge=[10.0, 20.0, 30.0, 40.0])
    (cell,) = gl.read_cells(tmp_path, 0.9)
    assert cell["method"] == "random" and cell["seed"] == 0 and cell["n"] == 4
    assert cell["ratio"] == pytest.approx(66 / 40)
    assert cell["run_on"] == pytest.approx(0.5)       # 21 and 30 words: more than 2 × 10
    assert cell["rouge_l"] == pytest.approx(25.0)
    assert gl.read_cells(tmp_path, 0.8) == []          # another rate's folder: nothing


@pytest.mark.parametrize("effect", [0.0, 2.0])
def test_a_length_effect_is_separated_from_a_method_effect(tmp_path, effect):
    # ROUGE-L = 30 - 6 * ratio exactly, plus ``effect`` for "staff", whose outputs are also
    # shorter: the raw difference mixes both, the adjusted one recovers ``effect``.
    gl = load_script()
    ratios = {"random": [1.5, 1.4, 1.3, 1.45], "staff": [1.2, 1.25, 1.1]}
    for method, values in ratios.items():
        for seed, ratio in enumerate(values):
            rouge = 30 - 6 * ratio + (effect if method == "staff" else 0) + 0.01 * seed
            write_cell(tmp_path, method, seed, generated=[round(20 * ratio)] * 2,
                       reference=20, rouge=[rouge, rouge])
    cells = gl.read_cells(tmp_path, 0.9)
    adjusted = gl.length_adjusted(cells, "random")
    assert adjusted["staff"]["raw"] > effect + 1       # shorter outputs alone add > 1 point
    assert adjusted["staff"]["adjusted"] == pytest.approx(effect, abs=0.05)
    assert adjusted["staff"]["low"] <= effect <= adjusted["staff"]["high"]
    assert adjusted["_fit"]["slope"] == pytest.approx(-6, abs=0.1)
    text = gl.markdown(cells, adjusted, "random", 0.9)
    assert "| staff | 3 |" in text


def test_no_baseline_cells_gives_no_fit(tmp_path):
    gl = load_script()
    write_cell(tmp_path, "staff", 0, generated=[5], reference=5, rouge=[50.0])
    assert gl.length_adjusted(gl.read_cells(tmp_path, 0.9), "random") == {}


def test_results_json_cells_give_the_same_fit_as_the_predictions(tmp_path):
    # A bench's results.json (length_ratio per cell, recorded by the evaluation) is enough for
    # the fit: no predictions needed, e.g. for a GPU run whose folders stayed on the machine.
    gl = load_script()
    ratios = {"random": [1.5, 1.4, 1.3], "staff": [1.2, 1.25, 1.1]}
    for method, values in ratios.items():
        for seed, ratio in enumerate(values):
            rouge = 30 - 6 * ratio + (1.0 if method == "staff" else 0) + 0.01 * seed
            write_cell(tmp_path, method, seed, generated=[round(20 * ratio)], reference=20,
                       rouge=[rouge])
    from_predictions = gl.length_adjusted(gl.read_cells(tmp_path, 0.9), "random")
    results = {"cells": {f"{c['method']}/p0.90/s{c['seed']}": {
        "method": c["method"], "rate": 0.9, "seed": c["seed"], "protocol": "epochs",
        "length_ratio": c["ratio"], "rouge_l": c["rouge_l"]} for c in gl.read_cells(tmp_path, 0.9)}}
    results["cells"]["staff/p0.80/s0"] = dict(results["cells"]["staff/p0.90/s0"], rate=0.8)
    cells = gl.results_cells(results, 0.9)
    assert len(cells) == 6 and all(c["run_on"] is None for c in cells)
    assert gl.length_adjusted(cells, "random")["staff"] == pytest.approx(from_predictions["staff"])
    assert "| staff | 0 | 1.20 | – |" in gl.markdown(cells, {}, "random", 0.9)
