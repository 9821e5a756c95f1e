"""bench/summary.py: the headline rows follow from the per-example values of results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load_bench_script


def load_script():
    return load_bench_script("summary")
