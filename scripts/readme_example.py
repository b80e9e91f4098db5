"""Print the README's worked example (a few lesion-table rows of the demo and the phantom's truth
for them) from a demo output folder, so the README is updated from outputs, never by hand.

    python scripts/readme_example.py [DEMO_OUT] [--truth data/sample_truth] [--participant 01]

Rows: for the first Dotarem and the first AGuIX state of the participant, its two largest
measurable lesions; then the truth's ``conc_vfa_mM`` of the same lesions, the largest healthy
control mean over every state, and the SE intensity scale of the AGuIX state.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bids_agquant.bids.tables import format_cell, read_tsv  # noqa: E402

COLUMNS = ["participant_id", "session_id", "contrast_agent", "lesion_id", "longest_diameter_mm",
           "measurable", "se_mean_percent", "t1_pre_mean_s", "t1_post_mean_s", "conc_mean_mM",
           "conc_mean_mg_per_L", "n_voxels"]

NUMBERS = ["longest_diameter_mm", "se_mean_percent", "t1_pre_mean_s", "t1_post_mean_s",
           "conc_mean_mM", "conc_mean_mg_per_L", "n_voxels", "se_intensity_scale"]


def _rounded(value) -> str:
    if isinstance(value, float) and not float(value).is_integer():
        return format_cell(float(f"{value:.3g}"))
    return format_cell(value)


def example(out: Path, truth_dir: Path, participant: str) -> str:
    table = read_tsv(out / f"sub-{participant}" / f"sub-{participant}_desc-lesions_stats.tsv")
    for column in NUMBERS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    lesions = table[table.region_type == "lesion"]
    picked = []
    for agent in ("Dotarem", "AGuIX"):
        state = lesions[lesions.contrast_agent == agent]
        first = state[state.session_id == state.session_id.iloc[0]]
        measurable = first[first.measurable.astype(str).str.lower() == "true"]
        picked.append(measurable.nlargest(2, "longest_diameter_mm").sort_values("lesion_id"))
    rows = pd.concat(picked)
    truth = read_tsv(truth_dir / "lesions.tsv")
    true = [truth[(truth.participant_id == r.participant_id) & (truth.session_id == r.session_id)
                  & (truth.lesion_id == str(r.lesion_id))].conc_vfa_mM.iloc[0]
            for r in rows.itertuples()]
    controls = table[table.region_type == "control"]
    scale = rows[rows.contrast_agent == "AGuIX"].se_intensity_scale.iloc[0]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_rounded(getattr(r, c)) for c in COLUMNS) + " |"
              for r in rows.itertuples()]
    lines += ["", f"truth conc_vfa_mM: {', '.join(_rounded(float(t)) for t in true)}",
              f"largest |control mean|: {1000 * controls.conc_mean_mM.abs().max():.1f} uM",
              f"se_intensity_scale of {rows[rows.contrast_agent == 'AGuIX'].session_id.iloc[0]}: "
              f"{scale:.3f}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "demo_out")
    ap.add_argument("--truth", type=Path, default=REPO / "data" / "sample_truth")
    ap.add_argument("--participant", default="01")
    args = ap.parse_args(argv)
    print(example(args.out, args.truth, args.participant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
