#!/usr/bin/env bash
# Second call on a lent GPU machine: the powered benches of issue 14 on one GPU, three processes
# side by side (a 135M model leaves the GPU mostly idle in one process: kernel launches, not
# arithmetic, set its pace), each stopped by SIGINT at the deadline; whatever finished comes
# back in $OUT (results.json, cells.csv, tables.md and the small files of every cell; no
# adapters). Everything is cached per cell, so an interrupted part is simply incomplete.
#
#   BUDGET_S=460 bash bench/gpu/run.sh         # on the GPU machine, after setup.sh
#   SMOKE=1 BUDGET_S=900 bash bench/gpu/run.sh  # here, on the CPU, with tiny sizes
set -uo pipefail
START=$(date +%s)
BUDGET_S=${BUDGET_S:-460}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" runs/logs
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
ROOT=$PWD
if [ -z "${SMOKE:-}" ]; then
  [ -d .gpu1/site ] || { [ -d /tmp/gpu1/site ] && rm -rf .gpu1 && ln -s /tmp/gpu1 .gpu1; }
  [ -d .gpu1/site ] || { echo "no .gpu1/site: the machine was not the one set up (cold start)"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .gpu1/site .gpu2/*.whl
  export PYTHONPATH=$ROOT/src:$ROOT/.gpu1/site
  export OMP_NUM_THREADS=4
else
  export PYTHONPATH=$ROOT/src OMP_NUM_THREADS=1
fi
HF=/tmp/smollm2-hf
if [ ! -f $HF/config.json ]; then
  if command -v xz >/dev/null; then
    cat .gpu1/m.xz.part00 .gpu2/m.xz.part01 | xz -d -T4 > /tmp/smollm2.gguf
  else
    cat .gpu1/m.xz.part00 .gpu2/m.xz.part01 | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1 << 22)" > /tmp/smollm2.gguf
  fi
  sha256sum /tmp/smollm2.gguf
  python3 bench/gpu/convert_gguf.py /tmp/smollm2.gguf $HF || exit 4
fi
echo "model ready after $(( $(date +%s) - START )) s"
DEADLINE=$(( START + BUDGET_S ))
left() { echo $(( DEADLINE - $(date +%s) )); }
run() {  # run a command until the deadline (SIGINT then, SIGKILL 20 s later)
  local t; t=$(left); [ "$t" -gt 10 ] || { echo "skipped (no time): $*"; return 0; }
  timeout -s INT -k 20 "$t" "$@"
}
D=$ROOT/.gpu1/data
MODEL_SETS=(--set select.small.name=$HF --set select.target.name=$HF)
M_SETS=("${MODEL_SETS[@]}" --set select.data.path=$D/multi30k/train.jsonl
        --set eval.path=$D/multi30k/test.jsonl --set eval.batch_size=100
        --set select.scoring.batch_size=32)
# The same loss as 4 x 2 accumulated (a mean over 8 samples), in one micro-batch on the GPU.
S_SETS=("${MODEL_SETS[@]}" --set select.data.path=$D/dialogsum/train.jsonl
        --set eval.path=$D/dialogsum/test.jsonl --set eval.batch_size=100
        --set select.scoring.batch_size=16 --set select.finetune.batch_size=8
        --set select.finetune.grad_accum=1 --set finetune.batch_size=8 --set finetune.grad_accum=1)
DRAFT_SETS=(--set target.name=$HF --set small.name=$HF --set data.path=$D/multi30k/train.jsonl)
if [ -n "${SMOKE:-}" ]; then  # tiny sizes, to test this script on a CPU
  M_SETS+=(--set select.data.max_samples=32 --set finetune.epochs=1 --set select.finetune.epochs=1 --set eval.max_samples=8 --set eval.decode_samples=4
           --set select.selection.regions=4 --set select.selection.verify_per_region=2
           --set eval.max_new_tokens=8 --set select.data.cutoff_len=96
           --set seeds=[0,1] --set "parts=[{methods: [staff, random], rates: [0.9], seeds: [0, 1]}, {methods: [length], rates: [0.9]}, {methods: [staff, random], rates: [0.9], protocol: steps, seeds: [0]}, {methods: ['staff:draft'], rates: [0.9]}, {methods: ['staff:log'], rates: [0.9], seeds: [0]}]")
  S_SETS+=(--set select.data.max_samples=40 --set finetune.epochs=1 --set select.finetune.epochs=1 --set eval.max_samples=4 --set seeds=[0]
           --set select.selection.regions=3 --set select.selection.verify_per_region=2
           --set eval.max_new_tokens=8 --set "parts=[{methods: [staff, random], rates: [0.9]}, {methods: ['staff:rank'], rates: [0.9]}]")
  DRAFT_SETS+=(--set data.max_samples=48 --set draft.heal_steps=4 --set draft.calibration_samples=8
               --set draft.held_out=4)
  P1_PARTS=1,2; P2_M_PARTS=4; P3_PARTS=3; WAIT_SEEDS="0 1"; D_WAIT="0"; D_PARTS=1; P4_M_PARTS=5; P4_D_PARTS=2
else
  P1_PARTS=1,2,4,5,6,7; P2_M_PARTS=8,9; P3_PARTS=3; WAIT_SEEDS="0 1 2"; D_WAIT="0 1 2"; D_PARTS=1,2,3
  P4_M_PARTS=10,11; P4_D_PARTS=4,5
fi
DCFG=configs/bench/dialogsum-powered.yaml
DDIR=runs/bench/dialogsum-powered
wait_for() {  # wait_for DIR SEEDS: until STAFF's and Random's selections of those seeds exist
  # (STAFF's coresets go to selections/, another method's to selections/<method>/.)
  for s in $2; do for f in staff/s$s/selections random/s$s/selections/random; do
    while [ ! -f $1/select/$f/summary.json ] && [ "$(left)" -gt 10 ]; do sleep 5; done
  done; done
}
MCFG=configs/bench/multi30k-powered.yaml
MDIR=runs/bench/multi30k-powered
STAFF=(python3 -m staff.cli)

( run "${STAFF[@]}" bench $MCFG --parts $P1_PARTS "${M_SETS[@]}" ) > runs/logs/p1.log 2>&1 &
P1=$!
( run "${STAFF[@]}" bench $DCFG --parts $D_PARTS "${S_SETS[@]}"
  run "${STAFF[@]}" draft -c configs/draft/multi30k-smollm2.yaml "${DRAFT_SETS[@]}"
  # The full-data cell is process 1's first work; wait for it rather than train it twice.
  while [ ! -f $MDIR/cells/full/s0/eval/metrics.json ] && [ "$(left)" -gt 10 ]; do sleep 5; done
  run "${STAFF[@]}" bench $MCFG --parts $P2_M_PARTS "${M_SETS[@]}" ) > runs/logs/p2.log 2>&1 &
P2=$!
( # Part 3 re-uses part 1's selections (seeds 0-2): start once they exist.
  wait_for $MDIR "$WAIT_SEEDS"
  run "${STAFF[@]}" bench $MCFG --parts $P3_PARTS "${M_SETS[@]}" ) > runs/logs/p3.log 2>&1 &
P3=$!
( # The variants of issue 15 take STAFF's stage 1 (same small model, stage 1 held fixed).
  wait_for $MDIR "$WAIT_SEEDS"
  run "${STAFF[@]}" bench $MCFG --parts $P4_M_PARTS "${M_SETS[@]}"
  wait_for $DDIR "$D_WAIT"
  run "${STAFF[@]}" bench $DCFG --parts $P4_D_PARTS "${S_SETS[@]}" ) > runs/logs/p4.log 2>&1 &
P4=$!
while kill -0 $P1 2>/dev/null || kill -0 $P2 2>/dev/null || kill -0 $P3 2>/dev/null || kill -0 $P4 2>/dev/null; do
  sleep 15; echo "t=$(( $(date +%s) - START )) s: $(ls $MDIR/cells/*/p*/ 2>/dev/null | grep -c '^s') multi30k cells, $(ls runs/bench/dialogsum-powered/cells/*/p*/ 2>/dev/null | grep -c '^s') dialogsum cells"
  # Should the call be cut before the packing below, the results so far still come back.
  for b in multi30k-powered dialogsum-powered; do
    [ -f runs/bench/$b/results.json ] && cp runs/bench/$b/results.json "$OUT/$b.results.json.part"
  done
done
wait
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null || true
for b in multi30k-powered dialogsum-powered; do
  [ -d runs/bench/$b ] && tar czf "$OUT/$b.tgz" -C runs/bench --exclude='*.safetensors' \
      --exclude='*.bin' --exclude='*.pt' --exclude='*.npy' --exclude='finetune_work' \
      --exclude='checkpoint*' $b
done
[ -d runs/draft ] && tar czf "$OUT/draft.tgz" -C runs --exclude='*.safetensors' --exclude='*.pt' \
    --exclude='*.bin' --exclude='*.gguf' draft
tar czf "$OUT/logs.tgz" runs/logs
ls -la "$OUT"; echo "done after $(( $(date +%s) - START )) s"
