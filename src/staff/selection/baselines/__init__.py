"""The baselines the STAFF paper compares with (§4.1, Appendix A.2). Pure numpy + scikit-learn.

- ``random``: a uniform draw of m samples.
- ``el2n``:  the m highest EL2N scores (Paul et al., 2021; Marion et al., 2023).
- ``grand``: the m highest per-sample gradient norms, GraNd (Paul et al., 2021); the scoring
  engine calls this score "effort".
- ``ccs``:   Coverage-Centric Coreset Selection (Zheng et al., 2023): stratified sampling over
  equal-width score strata, smallest stratum first, optional hard cutoff.
- ``d2``:    D2 Pruning (Maharana et al., 2024): forward and reverse message passing over a
  kNN graph of the sample embeddings.

Every selector stores its parameters in ``__init__`` (checked there) and does the work in
``select(data, m, seed)``, which returns exactly m distinct row indices in the order they
were picked (rank order for the top-m methods, greedy order for D2).

``importance.py`` holds the random draw and the top-m methods (``length`` too: the m longest
responses), ``coverage.py`` CCS and D2; importing this package registers them all.
"""

from . import coverage, importance  # noqa: F401 - registers the baselines in SELECTORS
