#!/usr/bin/env bash
# The GPU check (docs/performance.md, "The GPU path"): at most 8 minutes on one CUDA GPU.
#   1. pytest -m cuda: fp16 autocast + loss scaler and bf16, training and testing, maps within
#      the stated tolerance of fp32; the feature cache and predict on CUDA
#   2. iqeclip benchmark, ViT-L-14-336 with random weights at 240 px: fp32, bf16, fp16 at
#      batch 16 and 64 (one JSON line each, with peak_gpu_mb)
#   3. a 1-epoch train-few (4-shot Brain) of ViT-L-14-336 on the synthetic benchmark, with its
#      time and peak GPU memory
# Run from anywhere: bash scripts/gpu_check.sh [OUT_DIR]  (PYTHON=... picks the interpreter;
# default .venv/bin/python, else python3). Everything printed is also kept in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU here")'
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")' | tee "$OUT/device.txt"

echo "== 1. pytest -m cuda"
timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/cuda 2>&1 | tee "$OUT/pytest_cuda.txt"

echo "== 2. benchmark ViT-L-14-336, random weights, 240 px"
: > "$OUT/benchmark.jsonl"
for precision in fp32 bf16 fp16; do
  for batch in 16 64; do
    timeout 75 "$PY" -m iqeclip benchmark --model_name ViT-L-14-336 --pretrain none \
      --img_size 240 --precision "$precision" --batch_size "$batch" --n_images $((batch * 4)) \
      --workers 4 --device cuda 2>/dev/null | tee -a "$OUT/benchmark.jsonl"
  done
done

echo "== 3. train-few, 1 epoch, ViT-L-14-336 on CUDA"
timeout 30 "$PY" -m iqeclip synth --out "$OUT/bench" --size 8 --image_size 240 > /dev/null
timeout 120 "$PY" - "$OUT" <<'PY' 2>&1 | tail -n 4 | tee "$OUT/train_few.txt"
import sys, time
import torch
from iqeclip.cli.main import main

out = sys.argv[1]
start = time.perf_counter()
code = main(["train-few", "--data_path", f"{out}/bench", "--obj", "Brain", "--shot", "4",
             "--epochs", "1", "--model_name", "ViT-L-14-336", "--pretrain", "none",
             "--img_size", "240", "--device", "cuda", "--save_dir", f"{out}/ckpt",
             "--log_path", f"{out}/train_few.log", "--overwrite"])
seconds = time.perf_counter() - start
peak = torch.cuda.max_memory_allocated() / 2**20
print(f"train-few 1 epoch: exit {code}, {seconds:.1f} s with the test, peak GPU memory {peak:.0f} MiB")
sys.exit(code)
PY
echo "gpu_check: done, results in $OUT"
