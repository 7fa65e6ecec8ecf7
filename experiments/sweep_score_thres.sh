#!/usr/bin/env bash
# Sweep D-SDS score thresholds and seeds over prompts: a thin wrapper over the shipped spec
# experiments/sweeps/score_thres.yaml (edit it, or copy it, to change prompts/thresholds/seeds).
# Finished runs are skipped, unfinished ones resumed; ROOT/sweep.csv and ROOT/sweep.md list them.
# Usage: bash experiments/sweep_score_thres.sh OUT_ROOT [sweep flags: --executor slurm, --dry_run,
#        --status, --max_parallel N, --set n_steps=2000, ...]
set -euo pipefail
out_root="${1:?usage: sweep_score_thres.sh OUT_ROOT [sweep flags...]}"
shift
here="$(cd "$(dirname "$0")" && pwd)"
exec python -m sjc_dsds.sweep "$here/sweeps/score_thres.yaml" --root "$out_root" "$@"
