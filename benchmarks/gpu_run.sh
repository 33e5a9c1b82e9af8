#!/usr/bin/env bash
# The device-machine check behind the GPU figures in the issue notes (one H200 here).
# Expects: .whl/ (hydra-core, omegaconf, antlr4, airbench wheels) and the data archive at
# .devdata/cifar10-jpeg.tar.gz, both carried; writes logs and JSON under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 CIFAR_LAB_CACHE_DIR=/tmp/cifar_lab_cache
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } 2>&1 | tee "$OUT/env.txt"
DATA=.devdata/cifar10-jpeg.tar.gz
# 1) speed94 through Lightning vs the same recipe as a plain loop vs airbench94, same data
timeout ${SPEED_TIMEOUT:-330} python3 benchmarks/speed.py --data $DATA --device cuda --runs ${RUNS:-5} \
  --systems airbench,plain94,speed94 --cache-dir /tmp/cifar_lab_cache --json "$OUT/speed94_gpu.json" 2>&1 | tee "$OUT/speed94_gpu.log"
# 2) the seed loop vs experiment=seed (2 epochs each: the per-image DataLoader is CPU-bound)
timeout ${SEED_TIMEOUT:-150} python3 benchmarks/speed.py --data $DATA --device cuda --runs 2 --seed-epochs 2 \
  --systems seed,exp_seed --cache-dir /tmp/cifar_lab_cache --json "$OUT/seed_gpu.json" 2>&1 | tee "$OUT/seed_gpu.log"
