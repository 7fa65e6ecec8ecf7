#!/usr/bin/env bash
# GPU device check (issue 11), under 5 minutes on one GPU: the CUDA tests, then bench_step at
# SD 1.5's shapes for fp16 and autocast (eager), then fp16 eager vs compiled.
#   bash experiments/device_check.sh          # logs under $OUT (if set) or ./device_check_logs
set -u
cd "$(dirname "$0")/.."
LOGS="${OUT:-device_check_logs}"
mkdir -p "$LOGS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$LOGS/gpu.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
    >>"$LOGS/gpu.txt" 2>&1 || status=1
cat "$LOGS/gpu.txt"

# 1. CUDA tests: the CUDA-only ones (render paths vs the CPU dense reference, half precision,
#    a tiny SD run on CUDA vs CPU) and the renderer/SD suites on this machine.
timeout 150 python -m pytest -q -rs \
    tests/test_render.py tests/test_stable_diffusion.py tests/test_cuda_run.py tests/test_host_syncs.py \
    2>&1 | tee "$LOGS/cuda_tests.log" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if grep -q "needs a CUDA" "$LOGS/cuda_tests.log"; then
    echo "device_check: CUDA tests were skipped (no GPU visible)"; status=1
fi

# 2. The step against the UNet alone, SD 1.5 shapes, 100^3 grid, 64x64 render.
for precision in fp16 autocast; do
    timeout 60 python experiments/bench_step.py --size sd15 --device cuda --precisions "$precision" \
        --steps 30 2>&1 | grep -v "^\[transformers\]" | tee "$LOGS/bench_step_$precision.log" | tail -n 4
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
timeout 120 python experiments/bench_step.py --size sd15 --device cuda --precisions fp16 --compile \
    --steps 30 2>&1 | grep -v "^\[transformers\]" | tee "$LOGS/bench_step_compiled.log" | tail -n 4
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "device_check: exit $status, logs in $LOGS"
exit $status
