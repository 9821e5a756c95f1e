"""Selection rules: STAFF (``staff.py``, over ``regions.py`` and ``verification.py``) and the
baselines (``baselines/``), each a ``Selector`` over the scores in a ``SelectionInput``
(``base.py``)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import SelectionConfig
from .base import SELECTORS, Selector
from .staff import StaffSelector


def make_selector(cfg: SelectionConfig,
                  verify: Callable[[np.ndarray], np.ndarray] | None = None) -> Selector:
    """The selector ``selection.method`` names, with its options from the config. ``verify``
    scores samples on the target (STAFF's verification; not used by the baselines)."""
    from . import baselines  # noqa: F401 - registers the baselines in SELECTORS

    if cfg.method == "staff":
        return StaffSelector(verify, regions=cfg.regions,
                             verify_per_region=cfg.verify_per_region, normalize=cfg.normalize,
                             budget_rule=cfg.budget_rule, within_region=cfg.within_region,
                             hard_prune=cfg.hard_prune,
                             verify_small_regions=cfg.verify_small_regions, score=cfg.score,
                             skip_verification=not cfg.verify, region_edges=cfg.region_edges,
                             region_clip=cfg.region_clip, verify_scale=cfg.verify_scale,
                             length_adjust=cfg.length_adjust, fill=cfg.fill,
                             boundary=cfg.boundary, length_strata=cfg.length_strata)
    params = {"ccs": {"strata": cfg.ccs_strata, "hard_cutoff": cfg.ccs_hard_cutoff},
              "d2": {"k": cfg.d2_k, "gamma": cfg.d2_gamma}}.get(cfg.method, {})
    return SELECTORS[cfg.method](**params)
