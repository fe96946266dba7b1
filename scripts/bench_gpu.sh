#!/usr/bin/env bash
# The GPU check, one prepared run of about 6-8 minutes on one GPU (CI never runs it; 1-2 more
# with OFFICIAL_ROOT):
#   - the GPU and the matmul peak of this run (bench_matmul.py);
#   - stage 1 (syn_haze) and stage 3 (real_haze) at the paper's size (ResNet-50-IBN-a, 384x384,
#     36 synthetic pairs + 18 real images per step, 8 DataLoader workers, bench_train.py's
#     r50_384) in fp32, bf16-mixed, and bf16-mixed + channels_last + torch.compile: step time,
#     pairs/s, data-wait share, peak CUDA memory;
#   - a DDP smoke: the demo network's stage 3 under DDPStrategy on the one device;
#   - when OFFICIAL_ROOT names the authors' RVSL/ folder: their training step against ours, in
#     turns, stages 1 and 3 at the same size in float32 (bench_vs_official.py; needs yacs).
# Usage: bash scripts/bench_gpu.sh [OUT_DIR]   (PYTHON=python3 to pick the interpreter)
set -uo pipefail
out=${1:-outputs/bench_gpu}
py=${PYTHON:-.venv/bin/python}
data=${BENCH_DATA:-/tmp/rvsl_bench_gpu_data}
mkdir -p "$out"
status=0
run() {  # run NAME TIMEOUT ARGS...: one measurement, its failure recorded but not fatal
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    if ! timeout "$limit" "$@"; then
        echo "!! $name failed or ran past ${limit}s"
        status=1
    fi
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
run matmul 45 "$py" scripts/bench_matmul.py --device cuda --json "$out/matmul.json"
common=(scripts/bench_train.py --device cuda --configs r50_384 --stages syn_haze real_haze
    --steps 8 --warmup 3 --data-dir "$data")
run fp32 140 "$py" "${common[@]}" --precision 32-true --json "$out/train_fp32.json"
run bf16 110 "$py" "${common[@]}" --precision bf16-mixed --json "$out/train_bf16.json"
run bf16_cl_compile 190 "$py" "${common[@]}" --precision bf16-mixed --channels-last --compile \
    --json "$out/train_bf16_cl_compile.json"
if [ -n "${OFFICIAL_ROOT:-}" ]; then
    run official 200 "$py" scripts/bench_vs_official.py --device cuda \
        --official-root "$OFFICIAL_ROOT" --size 384 --ids 6 --instances 6 --real 18 \
        --steps 8 --warmup 3 --json "$out/vs_official.json"
else
    echo "== official: skipped (set OFFICIAL_ROOT to the authors' RVSL/ folder)"
fi
run ddp 50 "$py" scripts/bench_train.py --device cuda --configs demo --stages real_haze \
    --steps 4 --ddp find_unused --data-dir "$data" --json "$out/train_ddp.json"
exit $status
