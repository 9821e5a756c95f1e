"""bench/score_agreement.py: agreement figures that follow from hand-made scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench_scripts import load_bench_script


def load_script():
    return load_bench_script("score_agreement")
