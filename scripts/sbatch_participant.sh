#!/bin/bash
# One bids_agquant participant per Slurm array task, the participant taken from line
# SLURM_ARRAY_TASK_ID of BIDS_DIR/participants.tsv (1 = first participant after the header).
# Submit with scripts/submit_slurm.sh (array size, log folder and the group step are set there),
# or by hand:
#   mkdir -p logs
#   sbatch --array=1-$(( $(wc -l < $BIDS_DIR/participants.tsv) - 1 )) \
#       --export=ALL,BIDS_DIR=...,OUTPUT_DIR=...,IMAGE=.../bids_agquant-0.1.0.sif \
#       scripts/sbatch_participant.sh
#
# Environment (read at run time):
#   BIDS_DIR, OUTPUT_DIR   required; absolute paths on a shared file system
#   IMAGE                  Apptainer/Singularity image (.sif); empty: run AGQUANT_CMD on the host
#   AGQUANT_CMD            host command when IMAGE is empty (default: bids-agquant)
#   WORK_ROOT              nipype work dirs, one per participant (default: $SCRATCH, else /tmp);
#                          a rerun with the same WORK_ROOT resumes where the last run stopped
#   KEEP_WORK=1            keep the work dir after success (it is always kept after a failure)
#   STATUS_DIR             per-participant exit codes (default: $SLURM_SUBMIT_DIR/agquant_status)
#   AGQUANT_ARGS           extra options, e.g. "--vfa-fit linear --skip-bids-validation"
#
#SBATCH --job-name=agquant-participant
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x_%A_%a.out
set -uo pipefail

: "${BIDS_DIR:?set BIDS_DIR (absolute path of the BIDS dataset)}"
: "${OUTPUT_DIR:?set OUTPUT_DIR (absolute path of the derivatives folder)}"
: "${SLURM_ARRAY_TASK_ID:?submit as an array job: sbatch --array=1-N ...}"
IMAGE=${IMAGE:-}
AGQUANT_CMD=${AGQUANT_CMD:-bids-agquant}
WORK_ROOT=${WORK_ROOT:-${SCRATCH:-/tmp}/agquant_work}
STATUS_DIR=${STATUS_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/agquant_status}
NPROCS=${SLURM_CPUS_PER_TASK:-1}

# participant of this task: column participant_id of participants.tsv, row TASK_ID
label=$(awk -F'\t' -v row="$SLURM_ARRAY_TASK_ID" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == "participant_id") col = i; next }
    NR == row + 1 && col { gsub(/\r/, "", $col); print $col }' "$BIDS_DIR/participants.tsv")
if [ -z "$label" ]; then
    echo "task $SLURM_ARRAY_TASK_ID: no participant on row $SLURM_ARRAY_TASK_ID of" \
         "$BIDS_DIR/participants.tsv (column participant_id)" >&2
    exit 66
fi
label=${label#sub-}
work="$WORK_ROOT/sub-$label"
mkdir -p "$work" "$OUTPUT_DIR" "$STATUS_DIR"

if [ -n "$IMAGE" ]; then
    # --cleanenv: nothing of the login environment leaks into the container (PYTHONPATH,
    # conda, thread settings); the input is mounted read-only.
    cmd=(apptainer exec --cleanenv
         -B "$BIDS_DIR:/data:ro" -B "$OUTPUT_DIR:/out" -B "$work:/work"
         "$IMAGE" bids-agquant /data /out participant)
else
    read -r -a cmd <<< "$AGQUANT_CMD"
    cmd+=("$BIDS_DIR" "$OUTPUT_DIR" participant)
    work_in=$work
fi
read -r -a extra <<< "${AGQUANT_ARGS:-}"
cmd+=(--participant-label "$label" -w "${work_in:-/work}" --nprocs "$NPROCS"
      --omp-nthreads "$NPROCS" "${extra[@]}")

echo "[$(date -Is)] sub-$label on $(hostname -s), job ${SLURM_ARRAY_JOB_ID:-?}_$SLURM_ARRAY_TASK_ID:" \
     "${cmd[*]}"
start=$(date +%s.%N)
"${cmd[@]}"
rc=$?
seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# one status file per participant (no shared file to lock): exit code, job, time, host
printf 'participant_id\texit_code\tjob_id\tseconds\thost\tfinished\n%s\t%d\t%s\t%s\t%s\t%s\n' \
    "sub-$label" "$rc" "${SLURM_ARRAY_JOB_ID:-}_${SLURM_ARRAY_TASK_ID}" "$seconds" \
    "$(hostname -s)" "$(date -Is)" > "$STATUS_DIR/sub-$label.tsv"
if [ "$rc" -eq 0 ] && [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$work"
fi
echo "[$(date -Is)] sub-$label exit code $rc after ${seconds} s (status: $STATUS_DIR/sub-$label.tsv)"
exit "$rc"
