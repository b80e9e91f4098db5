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
#   IMAGE                  the image: a .sif file (Apptainer/Singularity) or an image name of
#                          podman/docker (bids_agquant:0.1.0); empty: run AGQUANT_CMD on the host
#   CONTAINER_ENGINE       apptainer, singularity, podman or docker (default: apptainer for a
#                          .sif/.simg IMAGE, singularity if apptainer is missing, else podman)
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

# container_command LEVEL: cmd=(...) running the image with CONTAINER_ENGINE, the input at /bids
# (read-only), the outputs at /out, the participant's work dir at /work. The same function is in
# sbatch_group.sh (Slurm runs a copy of the batch script: a sibling file cannot be sourced).
container_command() {
    local engine=${CONTAINER_ENGINE:-}
    if [ -z "$engine" ]; then
        case $IMAGE in
            *.sif|*.simg) engine=apptainer; command -v apptainer >/dev/null || engine=singularity ;;
            *) engine=podman ;;
        esac
    fi
    local mounts=("$BIDS_DIR:/bids:ro" "$OUTPUT_DIR:/out")
    [ "$1" = participant ] && mounts+=("$work:/work")
    case $engine in
        apptainer|singularity)
            # --cleanenv: nothing of the login environment leaks in (PYTHONPATH, conda, threads)
            cmd=("$engine" exec --cleanenv)
            for m in "${mounts[@]}"; do cmd+=(-B "$m"); done
            cmd+=("$IMAGE" bids-agquant) ;;
        podman|docker)
            # the job's own uid:gid (files in OUTPUT_DIR belong to the submitting user; rootless
            # podman maps it with keep-id), no network, never a registry pull
            cmd=("$engine" run --rm --network none --pull never --user "$(id -u):$(id -g)")
            [ "$engine" = podman ] && [ "$(id -u)" -ne 0 ] && cmd+=(--userns keep-id)
            for m in "${mounts[@]}"; do cmd+=(-v "$m"); done
            cmd+=("$IMAGE") ;;
        *)
            echo "CONTAINER_ENGINE=$engine: use apptainer, singularity, podman or docker" >&2
            return 1 ;;
    esac
    command -v "$engine" >/dev/null || { echo "CONTAINER_ENGINE=$engine: $engine is not on" \
        "PATH of $(hostname -s)" >&2; return 1; }
}

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
    container_command participant || exit 64
    cmd+=(/bids /out participant)
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
