#!/bin/bash
# Submit bids_agquant on a Slurm cluster: one array task per participant of participants.tsv,
# then the group level once all of them succeeded (afterok). Prints the two job ids.
#
#   scripts/submit_slurm.sh BIDS_DIR OUTPUT_DIR [IMAGE] [-- extra sbatch options]
#   e.g. IMAGE=~/images/bids_agquant-0.1.0.sif WORK_ROOT=$SCRATCH/agquant \
#        scripts/submit_slurm.sh /data/nanorad2 /data/nanorad2/derivatives/agquant -- -p short
#   or   CONTAINER_ENGINE=podman IMAGE=bids_agquant:0.1.0 scripts/submit_slurm.sh ...
#
# Environment passed on to the jobs: IMAGE (a .sif file or a podman/docker image name),
# CONTAINER_ENGINE, AGQUANT_CMD, WORK_ROOT, KEEP_WORK, STATUS_DIR, AGQUANT_ARGS (see
# scripts/sbatch_participant.sh). GROUP_DEPENDENCY=afterany runs the group
# level even when some participants failed (they are then left out). Prints "ARRAY_ID GROUP_ID".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { sed -n 2,13p "$0" >&2; exit 64; }
BIDS_DIR=$(cd "$1" && pwd) || exit 66
mkdir -p "$2"; OUTPUT_DIR=$(cd "$2" && pwd) || exit 73
shift 2
if [ $# -gt 0 ] && [ "$1" != "--" ]; then IMAGE=$1; shift; fi
# a .sif given by a relative path: absolute, since the jobs start in another folder
[ -n "${IMAGE:-}" ] && [ -f "$IMAGE" ] && IMAGE=$(readlink -f "$IMAGE")
[ "${1:-}" = "--" ] && shift
export BIDS_DIR OUTPUT_DIR IMAGE=${IMAGE:-}
[ -f "$BIDS_DIR/participants.tsv" ] || { echo "no $BIDS_DIR/participants.tsv" >&2; exit 66; }
n=$(awk 'NR > 1 && NF' "$BIDS_DIR/participants.tsv" | wc -l)
[ "$n" -ge 1 ] || { echo "$BIDS_DIR/participants.tsv lists no participants" >&2; exit 66; }
mkdir -p logs
array=$(sbatch --parsable --array="1-$n${ARRAY_LIMIT:+%$ARRAY_LIMIT}" --export=ALL "$@" \
        "$here/sbatch_participant.sh")
array=${array%%;*}
group=$(sbatch --parsable --dependency="${GROUP_DEPENDENCY:-afterok}:$array" \
        --kill-on-invalid-dep=yes --export=ALL "$@" "$here/sbatch_group.sh")
group=${group%%;*}
echo "participants: job $array (tasks 1-$n); group level: job $group (after $array)" >&2
echo "$array $group"
