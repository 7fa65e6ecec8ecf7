#!/usr/bin/env bash
# The D-SDS authors' SJC command (docs/method.md B.3): SD v1.5, toucan prompt, dynamic score clipping 2 -> 8,
# emptiness 1e4 x20 after half the run, no depth loss. Needs a GPU and the SD v1.5 weights.
# Usage: bash run_sjc_debiasing.sh [OUT_DIR] [extra flags...]
set -euo pipefail
out_dir="${1:-outputs/dsds_toucan}"
shift || true
python run_sjc.py \
  --sd.prompt "a colorful toucan with a large beak" \
  --n_steps 10000 \
  --lr 0.05 \
  --sd.scale 100.0 \
  --score_thres 8.0 \
  --score_dynamic True \
  --emptiness_weight 10000 \
  --emptiness_step 0.5 \
  --emptiness_multiplier 20.0 \
  --depth_weight 0 \
  --seed 0 \
  --out_dir "$out_dir" \
  "$@"
