"""bench/effort_analysis.py on a hand-made run folder: the numbers it reports are the ones the
scores imply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench_scripts import load_bench_script


def load_script():
    return load_bench_script("effort_analysis")
