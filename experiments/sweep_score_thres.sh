#!/usr/bin/env bash
# Sweep D-SDS score thresholds and seeds over a list of prompts into one output root.
# A run whose summary.json says it finished is skipped; an unfinished one is resumed.
# Usage: bash experiments/sweep_score_thres.sh OUT_ROOT [extra run_sjc.py flags...]
#   PROMPTS, THRESHOLDS and SEEDS may be overridden from the environment (space-separated;
#   prompts separated by '|').
set -euo pipefail
out_root="${1:?usage: sweep_score_thres.sh OUT_ROOT [extra flags...]}"
shift
IFS='|' read -r -a prompts <<< "${PROMPTS:-a colorful toucan with a large beak|a smiling rabbit|a small kitten}"
read -r -a thresholds <<< "${THRESHOLDS:-0 2 4 8}"
read -r -a seeds <<< "${SEEDS:-0 1 2}"

slug() { echo "$1" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/_/g; s/^_+|_+$//g'; }

for prompt in "${prompts[@]}"; do
  for thres in "${thresholds[@]}"; do
    for seed in "${seeds[@]}"; do
      run_dir="$out_root/$(slug "$prompt")/thres_${thres}/seed_${seed}"
      if [[ -f "$run_dir/summary.json" ]] && grep -q '"finished": true' "$run_dir/summary.json"; then
        echo "skip (done): $run_dir"
        continue
      fi
      resume=()
      if compgen -G "$run_dir/checkpoints/step_*.safetensors" > /dev/null; then
        resume=(--resume "$run_dir")
      fi
      echo "run: $run_dir"
      python run_sjc.py \
        --sd.prompt "$prompt" \
        --score_thres "$thres" \
        --score_dynamic True \
        --seed "$seed" \
        --out_dir "$run_dir" \
        "${resume[@]}" \
        "$@"
    done
  done
done
