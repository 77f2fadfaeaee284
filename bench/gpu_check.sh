#!/usr/bin/env bash
# GPU check for a lent H100/H200 (see ../shared/GPU.md for how DALI gets there).
# Under 4 minutes: synthetic 720p shards, DALI loader alone, DoRA step alone, then both together.
# Prints a short table last; details (JSON, log, GPU info) go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import nvidia.dali, torch, timm; print('dali', nvidia.dali.__version__, 'torch', torch.__version__, 'timm', timm.__version__)" | tee "$OUT/versions.txt"
timeout 220 python bench/gpu_check.py --out "$OUT" 2>&1 | grep -v -E "nvjpeg2k|nvtiff" | tee "$OUT/log.txt"
