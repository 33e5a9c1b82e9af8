#!/usr/bin/env bash
# The device-machine check behind the GPU figures in the issue notes (one H200 here), in order of
# importance, each part under its own timeout so a failure costs only that part.
# Expects: .whl/ (hydra-core, omegaconf, antlr4, airbench wheels) and the data archive at
# .devdata/cifar10-jpeg.tar.gz, both carried; writes logs and JSON under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 CIFAR_LAB_CACHE_DIR=/tmp/cifar_lab_cache
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } 2>&1 | tee "$OUT/env.txt"
DATA=$PWD/.devdata/cifar10-jpeg.tar.gz
COMMON="data=folder data.path=$DATA trainer=gpu logger=none"
# in order of value for a short loan: the large-model recipe against its reference first
PARTS=${PARTS:-faults,resnet18,wrn16_8,wide,speed94,sweep,speed96,seed}  # which parts to run, e.g. PARTS=speed94,sweep
has() { [[ ",$PARTS," == *",$1,"* ]]; }
# cpu90 candidates: "widths batch epochs" (epochs chosen so each takes ~560 s on 2 CPU cores)
CANDIDATES=${CANDIDATES:-"[64,192,192] 256 8.5; [48,160,160] 256 11.5; [64,256,256] 256 6.4; [64,128,256] 256 10; [64,256,256] 1024 6; [32,128,128] 256 17; [64,192,192] 512 8.5"}

# 00) the long-run checks that need CUDA (benchmarks/gpu_faults.py: the shard order is the CPU one,
#     the warm-up restores the CUDA RNG, module.compile with a mode trains): about two minutes
has faults && timeout ${FAULTS_TIMEOUT:-240} python3 benchmarks/gpu_faults.py --data $DATA --cache-dir /tmp/cifar_lab_cache \
  2>&1 | tee "$OUT/faults.log"

# 0) experiment=resnet18 at its default length (26 epochs) side by side with the plain-PyTorch
#    reference loop of the same recipe (benchmarks/reference_resnet18.py), same data, one seed each
has resnet18 && timeout ${RN18_TIMEOUT:-300} python3 benchmarks/speed.py --data $DATA --device cuda --runs 1 \
  --systems ref_resnet18,resnet18 --width 64 --large-epochs 26 --cache-dir /tmp/cifar_lab_cache \
  --json "$OUT/resnet18_gpu.json" 2>&1 | tee "$OUT/resnet18_gpu.log"

# 0b) experiment=wrn16_8 (the design card's net as a complete recipe), one seed
has wrn16_8 && timeout ${WRN_TIMEOUT:-240} python3 train.py experiment=wrn16_8 $COMMON seed=0 hydra.run.dir=/tmp/wrn16_8 \
  2>&1 | tail -5 | tee "$OUT/wrn16_8.log"
has wrn16_8 && cp /tmp/wrn16_8/metrics.json "$OUT/wrn16_8_metrics.json" 2>/dev/null

# 1) speed94 through Lightning vs the same recipe as a plain loop vs airbench94, same data
has speed94 && timeout ${SPEED_TIMEOUT:-200} python3 benchmarks/speed.py --data $DATA --device cuda --runs ${RUNS:-4} \
  --systems airbench,plain94,speed94 --cache-dir /tmp/cifar_lab_cache --json "$OUT/speed94_gpu.json" 2>&1 | tee "$OUT/speed94_gpu.log"

# 1b) the design card's own command on real data (WRN-16-8, 10 epochs, default callbacks and
#     TensorBoard): the everyday path, checkpoints and validation included, end to end
has wide && timeout ${WIDE_TIMEOUT:-150} python3 train.py model=wide optimizer.lr=0.05 data=folder data.path=$DATA trainer=gpu \
  seed=0 hydra.run.dir=/tmp/wide 2>&1 | tail -15 | tee "$OUT/wide.log"
has wide && cp /tmp/wide/metrics.json "$OUT/wide_metrics.json" 2>/dev/null

# 2) accuracy of CPU-recipe candidates (their CPU time is measured on the CPU), tuned on a
#    5000-image validation split: val/acc is the final weights with the recipe's TTA
SWEEP=/tmp/sweep_cpu90
sweep() {  # widths batch epochs
  python3 train.py -m experiment=cpu90 $COMMON data.val_size=5000 data.crop_epochs=0 "model.widths=$1" data.batch_size=$2 epochs=$3 \
    seed=0,1 hydra.sweep.dir=$SWEEP hydra.sweep.subdir="w${1//[^0-9]/_}_b$2_e$3_s\${seed}" 2>&1 | grep -E "error|Error|Traceback" || true
}
has sweep && {
  timeout ${SWEEP_TIMEOUT:-170} bash -c "$(declare -f sweep); SWEEP=$SWEEP; COMMON='$COMMON'; sweep ${CANDIDATES//;/; sweep }"
  python3 - "$SWEEP" <<'PY'
import json, sys
from pathlib import Path
for m in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    d = json.loads(m.read_text())
    print(f"{m.parent.name:28s} val/acc={d.get('val/acc', float('nan')):.4f} fit_s={d.get('fit_time_s', 0):.1f} status={d.get('status', 'ok')}")
PY
} 2>&1 | tee "$OUT/sweep_cpu90.log"

# 3) speed96 (airbench96's recipe) through Lightning, one seed
has speed96 && timeout ${S96_TIMEOUT:-80} python3 train.py experiment=speed96 $COMMON seed=0 hydra.run.dir=/tmp/speed96 2>&1 | tail -5 | tee "$OUT/speed96.log"
has speed96 && cp /tmp/speed96/metrics.json "$OUT/speed96_metrics.json" 2>/dev/null

# 4) the seed loop vs experiment=seed (1 epoch each: the per-image DataLoader is CPU-bound)
has seed && timeout ${SEED_TIMEOUT:-80} python3 benchmarks/speed.py --data $DATA --device cuda --runs 2 --seed-epochs 1 \
  --systems seed,exp_seed --cache-dir /tmp/cifar_lab_cache --json "$OUT/seed_gpu.json" 2>&1 | tee "$OUT/seed_gpu.log"
