#!/usr/bin/env bash
# Submit the gpuroof array (one task per node or GPU) and the merge-and-compare job after it.
# Prints "<array job id> <merge job id>".
#
#   GPUROOF_TASKS=16 experiments/slurm/submit.sh                                 # 16 nodes, exclusive
#   GPUROOF_TASKS=32 GPUROOF_SBATCH_ARGS="--gres=gpu:1" experiments/slurm/submit.sh  # one per GPU
#   GPUROOF_TASKS=4 experiments/slurm/submit.sh gpuroof measure --quick           # another command
#
# Environment: GPUROOF_RESULTS (shared directory, default ./results/slurm), GPUROOF_TASKS (array
# size, default 4), GPUROOF_SBATCH_ARGS (extra sbatch options for the array, default --exclusive),
# GPUROOF_CMD (the per-task command when no arguments are given, default `gpuroof run`),
# GPUROOF (how the merge job calls gpuroof, default `gpuroof`).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export GPUROOF_RESULTS="${GPUROOF_RESULTS:-$PWD/results/slurm}"
tasks="${GPUROOF_TASKS:-4}"
read -r -a extra <<< "${GPUROOF_SBATCH_ARGS---exclusive}"
mkdir -p "$GPUROOF_RESULTS/logs"

array=$(sbatch --parsable --array="0-$((tasks - 1))" "${extra[@]}" \
        --output="$GPUROOF_RESULTS/logs/gpuroof-%A_%a.out" "$here/gpuroof_array.sbatch" "$@")
array="${array%%;*}"  # --parsable prints "id" or "id;cluster"
merge=$(sbatch --parsable --dependency="afterany:$array" --kill-on-invalid-dep=yes \
        --output="$GPUROOF_RESULTS/logs/gpuroof-merge-%j.out" "$here/gpuroof_merge.sbatch" "$array")
merge="${merge%%;*}"
echo "$array $merge"
