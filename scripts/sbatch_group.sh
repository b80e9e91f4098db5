#!/bin/bash
# The group level after the participant array (scripts/submit_slurm.sh submits it with
# --dependency=afterok:<array job>, so it starts only when every participant succeeded).
# Same environment as scripts/sbatch_participant.sh (BIDS_DIR, OUTPUT_DIR, IMAGE, AGQUANT_CMD,
# STATUS_DIR). It first gathers the per-participant exit codes into STATUS_DIR/summary.tsv.
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

if compgen -G "$STATUS_DIR/sub-*.tsv" > /dev/null; then
    { printf 'participant_id\texit_code\tjob_id\tseconds\thost\tfinished\n'
      for f in "$STATUS_DIR"/sub-*.tsv; do tail -n +2 "$f"; done; } > "$STATUS_DIR/summary.tsv"
    failed=$(awk -F'\t' 'NR > 1 && $2 != 0 {printf "%s(exit %s) ", $1, $2}' "$STATUS_DIR/summary.tsv")
    [ -n "$failed" ] && echo "participants that failed (left out of the group level): $failed" >&2
fi

if [ -n "$IMAGE" ]; then
    cmd=(apptainer exec --cleanenv -B "$BIDS_DIR:/data:ro" -B "$OUTPUT_DIR:/out"
         "$IMAGE" bids-agquant /data /out group)
else
    read -r -a cmd <<< "$AGQUANT_CMD"
    cmd+=("$BIDS_DIR" "$OUTPUT_DIR" group)
fi
echo "[$(date -Is)] group level: ${cmd[*]}"
"${cmd[@]}"
rc=$?
echo "[$(date -Is)] group level exit code $rc"
exit "$rc"
