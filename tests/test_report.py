"""The run report: a hand-made run folder (no models) -> report.html, checked as text, by
independent computation of its numbers, through the CLI and the pipeline hook, and as pixels in
a headless browser."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from staff.report import ReportError, build_report, plot_benchmark

K = 6
RATES = (0.5, 0.8)
TASKS = ("add", "sort", "reverse")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def make_run(folder, n=120, seed=0, with_task=True, data_path=None):
    """A finished run folder as the pipeline writes it, with made-up scores."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"s{i:03d}", "instruction": "Do it.", "output": str(i),
             **({"task": TASKS[i % 3]} if with_task else {})} for i in range(n)]
    data = folder.parent / f"{folder.name}-data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"data": {"path": str(data_path or data)}, "small": {"name": "small-model"},
           "target": {"name": "target-model"},
           "selection": {"pruning_rates": list(RATES), "regions": K, "verify_per_region": 4},
           "output_dir": str(folder)}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    ids = np.array([r["id"] for r in rows])
    effort = rng.lognormal(0.0, 0.5, n)
    pd.DataFrame({"id": ids, "effort": effort, "loss": effort / 2, "el2n": effort / 3,
                  "n_response_tokens": 5}).to_csv(folder / "scores.csv", index=False)
    edges = np.linspace(effort.min(), effort.max(), K + 1)
    region = np.clip(np.floor((effort - edges[0]) / (edges[-1] - edges[0]) * K), 0, K - 1)
    region = region.astype(int)
    verified = np.concatenate([rng.permutation(np.flatnonzero(region == r))[:4]
                               for r in range(K)])
    target = 3.0 * effort[verified] + rng.normal(0, 0.4, len(verified))
    pd.DataFrame({"id": ids[verified], "region": region[verified],
                  "small_effort": effort[verified], "target_effort": target}
                 ).to_csv(folder / "verification.csv", index=False)
    summary = {}
    for p in RATES:
        m = int(n * (1 - p))
        chosen = rng.choice(n, m, replace=False)
        name = f"p{p:.2f}"
        sub = folder / "selections" / name
        sub.mkdir(parents=True)
        (sub / "ids.txt").write_text("".join(f"{ids[i]}\n" for i in chosen))
        sizes = np.bincount(region, minlength=K)
        picked = np.bincount(region[chosen], minlength=K)
        table = pd.DataFrame({"region": range(K), "lo": edges[:-1], "hi": edges[1:],
                              "size": sizes, "verified": np.minimum(sizes, 4),
                              "factor": rng.uniform(0.5, 1.6, K), "budget": picked,
                              "selected": picked})
        table[table["size"] > 0].to_csv(sub / "regions.csv", index=False)
        (sub / "coreset.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in chosen))
        summary[name] = {"pruning_rate": p, "n": n, "m": m}
    (folder / "selections" / "summary.json").write_text(json.dumps(summary))
    (folder / "timings.json").write_text(json.dumps(
        {"train-small": 61.5, "score": 12.25, "verify": 8.0, "pick": 0.4}))
    return folder


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in IMG.findall(page)]


def rand_index_by_pairs(a, b) -> float:
    pairs = list(itertools.combinations(range(len(a)), 2))
    agree = sum((a[i] == a[j]) == (b[i] == b[j]) for i, j in pairs)
    return agree / len(pairs)


def adjusted_rand_index_by_pairs(a, b) -> float:
    """Hubert and Arabie's adjustment, from pair counts: (together in both - expected) /
    (mean of together in each - expected)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    both = sum(a[i] == a[j] and b[i] == b[j] for i, j in pairs)
    in_a = sum(a[i] == a[j] for i, j in pairs)
    in_b = sum(b[i] == b[j] for i, j in pairs)
    expected = in_a * in_b / len(pairs)
    return (both - expected) / ((in_a + in_b) / 2 - expected)


def equal_width(x, k):
    x = np.asarray(x, float)
    return np.clip(np.floor((x - x.min()) / (x.max() - x.min()) * k), 0, k - 1).astype(int)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    path = build_report(run)
    return run, path, path.read_text(encoding="utf-8")


def test_report_is_one_file_with_every_figure_embedded(report):
    run, path, page = report
    assert path == run / "report.html"
    pngs = images(page)
    # histogram + one region chart per rate + agreement + deciles + composition + timings
    assert len(pngs) == 1 + len(RATES) + 4
    assert all(p.startswith(PNG_MAGIC) and len(p) > 5000 for p in pngs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert not list(run.glob(".report.html.tmp*"))


def test_agreement_numbers_match_an_independent_computation(report):
    run, _, page = report
    v = pd.read_csv(run / "verification.csv")
    rho = v["small_effort"].corr(v["target_effort"], method="spearman")
    small, target = equal_width(v["small_effort"], K), equal_width(v["target_effort"], K)
    ri, ari = rand_index_by_pairs(small, target), adjusted_rand_index_by_pairs(small, target)
    assert 0.5 < ri < 1 and 0.5 < rho < 1  # a meaningful check: neither trivial nor degenerate
    assert 0 < ari < ri
    assert f'<td id="spearman-rho">{rho:.3f}</td>' in page
    assert f'<td id="rand-index">{ri:.3f}</td>' in page
    assert f'<td id="adjusted-rand-index">{ari:.3f}</td>' in page


def test_region_tables_and_composition_and_timings_are_in_the_text(report):
    run, _, page = report
    for p in RATES:
        assert f"p = {p:.2f}: {int(120 * (1 - p))} of 120 samples kept" in page
    assert "Composition of the coreset by <code>task</code>" in page
    chosen = (run / "selections" / "p0.50" / "ids.txt").read_text().split()
    share_add = sum(int(s[1:]) % 3 == 0 for s in chosen) / len(chosen)
    assert f"{100 * share_add:.1f} %" in page
    assert "<td>train-small</td><td>61.5</td>" in page
    assert "<td>total (selection overhead)</td><td>82.2</td>" in page


def test_composition_is_skipped_with_a_note(tmp_path):
    page = build_report(make_run(tmp_path / "plain", with_task=False)).read_text()
    assert "Skipped: the rows have no &#x27;task&#x27; or &#x27;topic&#x27; field" in page
    assert len(images(page)) == 1 + len(RATES) + 3  # no composition chart, a decile chart
    run = make_run(tmp_path / "moved", data_path=tmp_path / "gone.jsonl")
    page = build_report(run).read_text()
    assert "Skipped: the run&#x27;s data" in page and "could not be read" in page
    assert len(images(page)) == 1 + len(RATES) + 3  # no composition chart, a decile chart


def test_composition_field_from_the_config(tmp_path):
    run = make_run(tmp_path / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["report"] = {"composition_field": "output"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    page = build_report(run).read_text()
    assert "Composition of the coreset by <code>output</code>" in page
    assert "(other)" in page  # 120 distinct values: the most frequent, then the rest
    assert "Values missing from a coreset: " in page  # each value is 1 sample: most are left out
    cfg["report"] = {"composition_field": "colour"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    page = build_report(run).read_text()
    assert "report.composition_field == &#x27;colour&#x27;, but no row has that field" in page


def test_report_never_imports_torch_or_transformers(tmp_path):
    import sys

    run = make_run(tmp_path / "run")
    code = ("import sys; from staff.report import build_report; build_report(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match=f"{tmp_path} is not a finished run folder"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="is not a folder"):
        build_report(tmp_path / "missing")


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from staff.cli import app

    run = make_run(tmp_path / "run")
    res = CliRunner().invoke(app, ["report", str(run), "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(run / "report.html")
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nothing"), "-q"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("error: ")
    assert "Traceback" not in res.output
    assert CliRunner().invoke(app, ["report", "--help"]).exit_code == 0


def _finished_pipeline(tmp_path):
    """A Pipeline over the fake run whose stages all count as done: run_all only reports."""
    from staff.config import config_from_dict
    from staff.pipeline import STAGES, Pipeline

    run = make_run(tmp_path / "run")
    pipe = Pipeline(config_from_dict(yaml.safe_load((run / "config.yaml").read_text())),
                    show_progress=False)
    for stage, fp in pipe.fingerprints().items():
        if stage in STAGES:
            pipe.run.mark_done(stage, fp, seconds=1.0 + STAGES.index(stage))
    return run, pipe


def test_pipeline_writes_the_report(tmp_path):
    run, pipe = _finished_pipeline(tmp_path)
    result = pipe.run_all()
    assert (run / "report.html").is_file() and sorted(result.ids) == list(RATES)


def test_a_failing_report_does_not_fail_the_selection(tmp_path, monkeypatch, caplog):
    import staff.report

    def broken(run_dir, **options):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(staff.report, "build_report", broken)
    run, pipe = _finished_pipeline(tmp_path)
    with caplog.at_level(logging.WARNING, logger="staff.pipeline"):
        result = pipe.run_all()
    assert sorted(result.ids) == list(RATES)
    assert "report not written: disk on fire" in caplog.text
    assert "second line" not in caplog.text and not (run / "report.html").exists()


def test_plot_benchmark():
    rows = [{"method": m, "pruning_rate": p, "rougeL": s - 10 * p, "bleu": s / 2 - 5 * p}
            for m, s in (("staff", 60), ("random", 58), ("ccs", 57)) for p in (0.2, 0.5, 0.9)]
    assert plot_benchmark(rows).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="rows have neither 'rougeL' nor 'bleu'"):
        plot_benchmark([{"method": "staff", "pruning_rate": 0.5}])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                    reason="chromium is not installed (apt-get install chromium): the report "
                           "is not checked in a browser")
def test_report_renders_in_a_headless_browser(report, tmp_path):
    from matplotlib.image import imread

    _, path, _ = report
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,3000", path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    # Below the header the page is mostly figures: ink, many colours, and saturated (bar)
    # colours that text alone never gives. With the images broken (text only) these are
    # 4 %, ~800 and 0.1 %; with them 12 %, ~2500 and 4.6 %.
    figures_area = pixels[400:]
    non_white = (figures_area < 0.95).any(axis=-1).mean()
    colours = len(np.unique((figures_area * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    saturated = (figures_area.max(axis=-1) - figures_area.min(axis=-1) > 0.25).mean()
    assert non_white > 0.08, f"only {non_white:.1%} non-white pixels: did the images load?"
    assert colours > 1200, f"only {colours} distinct colours: did the images load?"
    assert saturated > 0.02, f"only {saturated:.1%} coloured pixels: did the images load?"


def test_decile_composition_against_a_random_draw(tmp_path):
    """Each coreset's share of every effort decile, and the hypergeometric 95% range of a
    random draw of the same size; a coreset of the top decile only is flagged."""
    from scipy.stats import hypergeom

    from staff.report.numbers import decile_composition
    from staff.report.read import read_run

    run_dir = make_run(tmp_path / "run")
    scores = pd.read_csv(run_dir / "scores.csv")
    order = scores.sort_values("effort")["id"].astype(str).tolist()
    top = order[-12:]                                   # the 12 highest of 120: decile 10
    (run_dir / "selections" / "p0.90").mkdir()
    (run_dir / "selections" / "p0.90" / "ids.txt").write_text("".join(f"{i}\n" for i in top))
    shutil.copy(run_dir / "selections" / "p0.50" / "regions.csv",
                run_dir / "selections" / "p0.90" / "regions.csv")
    summary = json.loads((run_dir / "selections" / "summary.json").read_text())
    summary["p0.90"] = dict(summary["p0.50"], pruning_rate=0.9, m=12)
    (run_dir / "selections" / "summary.json").write_text(json.dumps(summary))
    table = decile_composition(read_run(run_dir))
    assert list(table["samples"]) == [12] * 10
    assert list(table["p = 0.90"]) == [0.0] * 9 + [1.0]
    low, high = table.attrs["p = 0.90"]
    assert high[0] == hypergeom.ppf(0.975, 120, 12, 12) / 12 and low[0] == 0.0
    chosen = (run_dir / "selections" / "p0.50" / "ids.txt").read_text().split()
    rank = {i: k // 12 for k, i in enumerate(order)}
    expected = np.bincount([rank[i] for i in chosen], minlength=10) / len(chosen)
    assert np.allclose(table["p = 0.50"], expected)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert '<h2 id="decile-composition">' in page
    # A random 12 of 120 often misses a decile (its 2.5% quantile is 0): only the top decile,
    # all 12 where a random draw puts at most a few, is outside.
    assert "p = 0.90: 1 of 10 deciles outside a random draw&#x27;s 95% range" in page


def test_response_length_section_tells_a_short_response_coreset_from_a_random_one(tmp_path):
    run = make_run(tmp_path / "run")
    scores = pd.read_csv(run / "scores.csv")
    n = len(scores)
    scores["n_response_tokens"] = np.arange(n) % 20 + 1          # 1..20 tokens, mean 10.5
    scores.to_csv(run / "scores.csv", index=False)
    shortest = scores.sort_values("n_response_tokens", kind="stable")["id"][:24]
    (run / "selections" / "p0.80" / "ids.txt").write_text("".join(f"{i}\n" for i in shortest))
    page = build_report(run).read_text(encoding="utf-8")
    section = page[page.index('id="response-length"'):]
    section = section[:section.index("<h2")]
    # Independently: each length 1..20 occurs 6 times; the 24 shortest are 1..4: mean 2.5.
    tokens = scores["n_response_tokens"].to_numpy(float)
    half = 1.96 * tokens.std(ddof=1) / np.sqrt(24) * np.sqrt((n - 24) / (n - 1))
    assert f"<td>0.80</td><td>24</td><td>2.5</td><td>10.5</td><td>0.24×</td>" \
           f"<td>{10.5 - half:.1f}–{10.5 + half:.1f}</td>" in section
    assert "At p = 0.80 the coreset&#x27;s responses are shorter than a random draw&#x27;s." \
        in section
    assert "longer than" not in section


def test_response_length_section_is_left_out_when_every_response_has_one_length(report):
    _, _, page = report   # make_run gives every sample 5 response tokens
    assert 'id="response-length"' not in page


def test_hardest_samples_section_lists_the_top_scores_with_their_text_and_the_top_tenth_share(
        tmp_path):
    run = make_run(tmp_path / "run")
    scores = pd.read_csv(run / "scores.csv")
    order = scores.sort_values("effort", ascending=False)["id"].tolist()
    # p = 0.80 keeps 24 samples: the 6 hardest and 18 from the bottom half.
    kept = order[:6] + order[-18:]
    (run / "selections" / "p0.80" / "ids.txt").write_text("".join(f"{i}\n" for i in kept))
    page = build_report(run).read_text(encoding="utf-8")
    section = page[page.index('id="hardest-samples"'):]
    section = section[:section.index("<h2")]
    rows = re.findall(r"<tr><td>(s\d{3})</td>", section)
    assert rows == order[:8]                      # the eight highest, highest first
    hardest = order[0]
    assert f"<td>{int(hardest[1:])}</td>" in section   # its response (the row's output)
    # Independently: the top tenth is 12 samples; p = 0.80's coreset holds the first 6 of them.
    assert "p = 0.80: 25%" in section               # 6 of 24
    first_row = section[section.index(f"<td>{hardest}</td>"):].split("</tr>")[0]
    assert first_row.endswith("<td>yes</td>")       # the p = 0.80 column
    assert "hard_prune" in section
