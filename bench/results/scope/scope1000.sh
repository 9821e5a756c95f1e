#!/usr/bin/env bash
# Issue 19 item 4: effort with scoring.scope last-layer against all, on the final stage-1
# adapter, 1,000 of the 4,000 samples (the early-stop probe draw), one thread; both scopes
# timed in the same conditions, one after the other.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
cd /work/bench2
RUN=runs/bench/multi30k-powered/select/staff/s0
PY=/work/main/.venv/bin/python
$PY /work/main/bench/score_checkpoint.py $RUN $RUN/small_adapter --probe 1000 --scope last-layer --out runs/epochs/scope-last
$PY /work/main/bench/score_checkpoint.py $RUN $RUN/small_adapter --probe 1000 --scope all --out runs/epochs/scope-all
