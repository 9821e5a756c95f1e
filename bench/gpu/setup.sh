#!/usr/bin/env bash
# First call on a lent GPU machine (see bench/gpu/README.md): install the carried wheels into
# .gpu1/site and report the machine. A carried folder does not outlive its call (measured: the
# next call found no .gpu1), so it is copied to /tmp/gpu1, which stays while the machine is held;
# run.sh links it back.
set -euo pipefail
nvidia-smi -L || true
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target .gpu1/site .gpu1/whl/*.whl
ls .gpu1 .gpu1/data/*
rm -rf /tmp/gpu1 && cp -r .gpu1 /tmp/gpu1
echo "setup done"
