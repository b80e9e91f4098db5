#!/bin/bash
# The group level after the participant array (scripts/submit_slurm.sh submits it with
# --dependency=afterok:<array job>, so it starts only when every participant succeeded).
# Same environment as scripts/sbatch_participant.sh (BIDS_DIR, OUTPUT_DIR, IMAGE,
# CONTAINER_ENGINE, AGQUANT_CMD, STATUS_DIR). It first gathers the per-participant exit codes
# into STATUS_DIR/summary.tsv.
#
#SBATCH --job-name=agquant-group
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x_%j.out
set -uo pipefail

: "${BIDS_DIR:?set BIDS_DIR}" "${OUTPUT_DIR:?set OUTPUT_DIR}"
IMAGE=${IMAGE:-}
AGQUANT_CMD=${AGQUANT_CMD:-bids-agquant}
STATUS_DIR=${STATUS_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/agquant_status}

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

if compgen -G "$STATUS_DIR/sub-*.tsv" > /dev/null; then
    { printf 'participant_id\texit_code\tjob_id\tseconds\thost\tfinished\n'
      for f in "$STATUS_DIR"/sub-*.tsv; do tail -n +2 "$f"; done; } > "$STATUS_DIR/summary.tsv"
    failed=$(awk -F'\t' 'NR > 1 && $2 != 0 {printf "%s(exit %s) ", $1, $2}' "$STATUS_DIR/summary.tsv")
    [ -n "$failed" ] && echo "participants that failed (left out of the group level): $failed" >&2
fi

if [ -n "$IMAGE" ]; then
    container_command group || exit 64
    cmd+=(/bids /out group)
else
    read -r -a cmd <<< "$AGQUANT_CMD"
    cmd+=("$BIDS_DIR" "$OUTPUT_DIR" group)
fi
echo "[$(date -Is)] group level: ${cmd[*]}"
"${cmd[@]}"
rc=$?
echo "[$(date -Is)] group level exit code $rc"
exit "$rc"
