"""A cohort built from the paper's reported numbers (Verry et al. 2020), as participant outputs.

15 participants, 3 per AGuIX dose (15, 30, 50, 75, 100 mg/kg) as in the trial; primary tumours
as in the trial (NSCLC 6, melanoma 6, breast 2, colon 1; #13 and #14 NSCLC, #15 breast). Each
participant has three measurable lesions and one small (8 mm, not measurable) lesion with an
absurd SE that must never reach the statistics. Per dose the nine measurable lesion SEs are the
paper's mean times (1 + symmetric offsets), so their mean is the paper's mean exactly. Dotarem SE
is set so that the per-dose sensitivity is the paper's. Concentrations of the 100 mg/kg patients
follow the paper's SE-versus-concentration slopes; the later AGuIX session carries about 20 % of
the peak SE and a concentration below the control-region detection limit (3 x RMS of the
control means 0.001, -0.001, 0.0005 mM = 2.6e-3 mM) or n/a.

Session labels are deliberately not in time order by name ("baseline", "inj", "week1",
"month1" for some participants) and ``sessions.tsv`` gives the true order with acq_time.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

PAPER_DOSES = (15.0, 30.0, 50.0, 75.0, 100.0)
PAPER_MEAN_SE = (26.3, 24.8, 56.7, 64.4, 120.5)
PAPER_SENSITIVITY = (12.1, 19.5, 34.2, 31.8, 61.6)
TUMORS = ("melanoma", "NSCLC", "melanoma", "NSCLC", "melanoma", "melanoma", "NSCLC", "colon",
          "melanoma", "breast", "NSCLC", "melanoma", "NSCLC", "NSCLC", "breast")
SE_CONC_SLOPES = {"13": 3.31, "14": 1.69, "15": 3.95}     # % per mg/L, paper Fig. 3B
OFFSETS = np.array([-0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4])
DIAMETERS = (12.0, 18.0, 31.0)                          # measurable lesions (mm)
PERSISTENCE_FRACTION = 0.2
BAD_CONTROL = ("04", 25.0)                              # participant, control SE (%)

COLUMNS = ("participant_id", "session_id", "contrast_agent", "lesion_id", "longest_diameter_mm",
           "measurable", "volume_mm3", "se_mean_percent", "se_sd_percent", "t1_pre_mean_s",
           "t1_post_mean_s", "delta_r1_mean_per_s", "conc_mean_mM", "conc_sd_mM",
           "conc_mean_mg_per_L", "n_voxels")


def participant_label(i: int) -> str:
    return f"{i + 1:02d}"


def session_labels(i: int) -> dict[str, str]:
    """Role -> session label; odd participants use labels whose name order is not time order."""
    if i % 2:
        return {"D0": "baseline", "D1": "inj", "D8": "week1", "D28": "month1"}
    return {"D0": "D0", "D1": "D1", "D8": "D8", "D28": "D28"}


def lesion_se(i: int) -> list[float]:
    """SE (%) of the three measurable lesions of participant index i at the peak session."""
    dose_idx, k = divmod(i, 3)
    mean = PAPER_MEAN_SE[dose_idx]
    return [mean * (1 + OFFSETS[3 * k + j]) for j in range(3)]


def _fmt(v) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def write_paper_cohort(root: Path, *, participants_columns=("dose_mg_per_kg", "weight_kg",
                                                            "primary_tumor"),
                       write_participants=True, n_participants=15) -> tuple[Path, Path]:
    """Write BIDS_DIR (participants.tsv, sessions.tsv) and OUTPUT_DIR (lesion tables)."""
    bids, out = root / "bids", root / "out"
    bids.mkdir(parents=True)
    out.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "paper cohort", '
                                                   '"BIDSVersion": "1.9.0"}')
    rng = np.random.default_rng(0)
    prow = []
    for i in range(n_participants):
        p = participant_label(i)
        dose = PAPER_DOSES[i // 3]
        weight = 60.0 + 2.0 * i
        prow.append({"participant_id": f"sub-{p}", "dose_mg_per_kg": dose, "weight_kg": weight,
                     "primary_tumor": TUMORS[i]})
        ses = session_labels(i)
        sdir = bids / f"sub-{p}"
        sdir.mkdir()
        times = {"D0": "2019-03-01T09:00:00", "D1": "2019-03-02T11:00:00",
                 "D8": "2019-03-09T10:00:00", "D28": "2019-03-29T10:00:00"}
        with open(sdir / f"sub-{p}_sessions.tsv", "w") as fh:
            fh.write("session_id\tacq_time\n")
            for role in ("D28", "D8", "D0", "D1"):          # file order is not time order
                fh.write(f"ses-{ses[role]}\t{times[role]}\n")
        rows = []
        peak_se = lesion_se(i)
        sens = PAPER_SENSITIVITY[i // 3] / 100.0
        slope = SE_CONC_SLOPES.get(p)
        for j, (d, se) in enumerate(zip(DIAMETERS, peak_se), start=1):
            conc_mgl = se / slope if slope else float("nan")
            states = [("D0", "Dotarem", se / sens, float("nan")),
                      ("D1", "AGuIX", se, conc_mgl),
                      ("D8", "AGuIX", PERSISTENCE_FRACTION * se,
                       0.5 if j < 3 else float("nan")),            # 0.0005 mM < LoD, or n/a
                      ("D28", "Dotarem", se / sens * 0.9, float("nan"))]
            for role, agent, s, c_mgl in states:
                c_mM = c_mgl / 1000.0 if np.isfinite(c_mgl) else float("nan")
                rows.append(dict(participant_id=f"sub-{p}", session_id=f"ses-{ses[role]}",
                                 contrast_agent=agent, lesion_id=str(j), longest_diameter_mm=d,
                                 measurable=True, volume_mm3=d ** 3 * 0.5, se_mean_percent=s,
                                 se_sd_percent=0.3 * s, t1_pre_mean_s=1.4, t1_post_mean_s=1.0,
                                 delta_r1_mean_per_s=0.29, conc_mean_mM=c_mM, conc_sd_mM=0.01,
                                 conc_mean_mg_per_L=c_mgl, n_voxels=500))
        for role, agent in (("D0", "Dotarem"), ("D1", "AGuIX"), ("D8", "AGuIX"),
                            ("D28", "Dotarem")):
            rows.append(dict(participant_id=f"sub-{p}", session_id=f"ses-{ses[role]}",
                             contrast_agent=agent, lesion_id="4", longest_diameter_mm=8.0,
                             measurable=False, volume_mm3=100.0, se_mean_percent=500.0,
                             se_sd_percent=50.0, t1_pre_mean_s=1.4, t1_post_mean_s=0.5,
                             delta_r1_mean_per_s=1.0, conc_mean_mM=0.5, conc_sd_mM=0.1,
                             conc_mean_mg_per_L=500.0, n_voxels=30))
            for k in (1, 2, 3):
                se_c = float(rng.normal(0, 1.0))
                if (p, role, k) == (BAD_CONTROL[0], "D1", 2):
                    se_c = BAD_CONTROL[1]
                c = (0.001, -0.001, 0.0005)[k - 1] if agent == "AGuIX" else float("nan")
                rows.append(dict(participant_id=f"sub-{p}", session_id=f"ses-{ses[role]}",
                                 contrast_agent=agent, lesion_id=f"control-{k}",
                                 longest_diameter_mm=15.0, measurable=False, volume_mm3=1000.0,
                                 se_mean_percent=se_c, se_sd_percent=3.0, t1_pre_mean_s=1.0,
                                 t1_post_mean_s=1.0, delta_r1_mean_per_s=0.0, conc_mean_mM=c,
                                 conc_sd_mM=0.003, conc_mean_mg_per_L=c * 1000, n_voxels=400))
        odir = out / f"sub-{p}"
        odir.mkdir()
        with open(odir / f"sub-{p}_desc-lesions_stats.tsv", "w") as fh:
            fh.write("\t".join(COLUMNS) + "\n")
            for r in rows:
                fh.write("\t".join(_fmt(r[c]) for c in COLUMNS) + "\n")
    if write_participants:
        cols = ["participant_id", *participants_columns]
        with open(bids / "participants.tsv", "w") as fh:
            fh.write("\t".join(cols) + "\n")
            for r in prow:
                fh.write("\t".join(_fmt(r[c]) for c in cols) + "\n")
    return bids, out


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))
