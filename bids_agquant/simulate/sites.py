"""A simulated multi-site cohort: one phantom dataset per site, merged into one BIDS dataset.

Each site is a :class:`SiteSpec`: its label (``participants.tsv`` ``site``), scanner
(``Manufacturer``, ``ManufacturersModelName``, ``MagneticFieldStrength``) and the site effects
that the pipeline must either correct or reveal, as :class:`~bids_agquant.simulate.config.
PhantomConfig` settings:

* the B1+ pattern: its range over the head (``b1_range``) and how much it changes between
  sessions (``b1_session_variation``);
* the receiver gain per session (``gain_range``);
* a VFA T1 bias of the protocol (``vfa_flip_scale``: actual over nominal flip angle beyond the
  B1 map, a T1 bias of about its square minus 1) and the VFA protocol itself (flip angles, TR);
* the SNR (``snr``);
* the field strength, which sets the relaxivities the lesions' R1 change is made with.

Tissue T1 and proton density are the 3 T values of :data:`bids_agquant.simulate.anatomy.TISSUES`
at every field strength (left out: tissue T1 is shorter at 1.5 T, by about 15-20 % in white
matter).

:func:`simulate_cohort` writes the merged dataset and a truth directory holding one truth
directory per site (``site-<label>/``, each readable with
:func:`bids_agquant.simulate.truth.load_truth`) and ``cohort.json`` (sites, their settings and
participants).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..qmri.spgr import spgr_signal
from ..qmri.vfa import VFAModel
from . import bidsio
from .config import make_config
from .dataset import simulate_dataset

__all__ = ["SiteSpec", "SITES", "simulate_cohort", "site_of", "apparent_t1_ratio"]


@dataclass(frozen=True)
class SiteSpec:
    """One imaging site: its label and the phantom settings (site effects) of its scanner."""
    label: str
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.label.isalnum():
            raise ValueError(f"site label {self.label!r} must be alphanumeric")


#: The default three sites: two 3 T scanners and one 1.5 T scanner of different (fictitious)
#: makers, with their own B1 patterns, gains, SNR and VFA protocols and T1 biases.
SITES = (
    SiteSpec("A", dict(field_strength_t=3.0, manufacturer="Phantom vendor S",
                       manufacturers_model_name="S-3T", b1_range=(0.80, 1.20),
                       gain_range=(0.8, 1.25), snr=40.0, vfa_flip_scale=1.0)),
    SiteSpec("B", dict(field_strength_t=1.5, manufacturer="Phantom vendor G",
                       manufacturers_model_name="G-1.5T", b1_range=(0.94, 1.06),
                       b1_session_variation=0.1, gain_range=(1.5, 3.0), snr=30.0,
                       vfa_flip_scale=0.95, vfa_flip_angles_deg=(3.0, 8.0, 15.0),
                       vfa_tr_s=0.008)),
    SiteSpec("C", dict(field_strength_t=3.0, manufacturer="Phantom vendor P",
                       manufacturers_model_name="P-3T", b1_range=(0.75, 1.25),
                       gain_range=(0.5, 0.8), snr=55.0, vfa_flip_scale=1.05,
                       vfa_tr_s=0.005)),
)


def simulate_cohort(out_dir, *, truth_dir=None, sites=SITES, participants_per_site: int = 1,
                    preset: str | None = "small", seed: int = 0, overwrite: bool = False,
                    **settings) -> dict:
    """Write a multi-site cohort to ``out_dir`` and its truth to ``truth_dir`` (default
    ``<out_dir>_truth``); returns the cohort record written to ``cohort.json``.

    Participants are labelled ``<site><n>`` (``A01``, ``A02``, ``B01``, ...); ``settings`` apply
    to every site before the site's own. Site ``i`` is simulated with seed ``seed + 1000 i``,
    and its doses and primary tumours start at the ``i``-th (cycled): with one participant per
    site, site ``i`` gets ``doses[i]``."""
    out = Path(out_dir).absolute()
    truth_root = Path(truth_dir).absolute() if truth_dir else out.parent / f"{out.name}_truth"
    if truth_root == out or out in truth_root.parents:
        raise ValueError(f"truth directory {truth_root} must not be inside the BIDS dataset {out}")
    labels = [s.label for s in sites]
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"sites: give one or more sites with distinct labels, got {labels}")
    for path in (out, truth_root):
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{path} exists and is not empty (overwrite=True replaces "
                                      f"it)")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)

    record = {"sites": []}
    participants = []
    with tempfile.TemporaryDirectory(prefix="cohort_", dir=out.parent) as tmp:
        for i, site in enumerate(sites):
            subs = tuple(f"{site.label}{j + 1:02d}" for j in range(participants_per_site))
            base = make_config(preset, **settings)      # the doses and tumours rotate by site
            rotated = {k: getattr(base, k)[i % len(getattr(base, k)):]
                       + getattr(base, k)[:i % len(getattr(base, k))]
                       for k in ("doses", "primary_tumors")}
            cfg = make_config(preset, **{**settings, **rotated, **site.settings,
                                         "n_participants": participants_per_site,
                                         "participant_labels": subs, "site": site.label,
                                         "seed": seed + 1000 * i})
            site_bids = Path(tmp) / f"site-{site.label}"
            site_truth = truth_root / f"site-{site.label}"
            simulate_dataset(site_bids, truth_dir=site_truth, config=cfg,
                             command=f"simulate_cohort(..., site {site.label})")
            _merge_site(site_bids, out)
            participants.append(pd.read_csv(site_bids / "participants.tsv", sep="\t",
                                            dtype=str, keep_default_na=False))
            meta = json.loads((site_truth / "truth.json").read_text())
            meta["bids_dir"] = os.path.relpath(out, site_truth)
            bidsio.write_json(site_truth / "truth.json", meta)
            record["sites"].append({"label": site.label, "settings": _jsonable(site.settings),
                                    "participants": list(subs), "seed": seed + 1000 * i,
                                    "truth_dir": f"site-{site.label}"})
    table = pd.concat(participants, ignore_index=True)
    table.to_csv(out / "participants.tsv", sep="\t", index=False)
    description = json.loads((out / "dataset_description.json").read_text())
    description["Name"] = (f"bids_agquant digital phantom, multi-site cohort "
                           f"({len(sites)} sites)")
    description["GeneratedBy"][0]["Description"] = (
        f"bids_agquant.simulate.sites.simulate_cohort, seed {seed}, sites "
        f"{', '.join(labels)}")
    bidsio.write_json(out / "dataset_description.json", description)
    with open(out / "README", "a") as fh:
        fh.write("\nMulti-site cohort: " + "; ".join(
            f"site {s.label}: {s.settings.get('manufacturer', '?')} "
            f"{s.settings.get('manufacturers_model_name', '')} at "
            f"{s.settings.get('field_strength_t', 3.0):g} T" for s in sites)
            + " (participants.tsv column site).\n")
    record.update(seed=seed, preset=preset, participants_per_site=participants_per_site,
                  settings=_jsonable(settings), bids_dir=os.path.relpath(out, truth_root))
    bidsio.write_json(truth_root / "cohort.json", record)
    return record


def apparent_t1_ratio(config: dict, t1_s: float = 0.85, b1: float = 1.0) -> float:
    """The VFA T1 bias of a protocol: apparent over true T1 of tissue of T1 ``t1_s`` at B1+
    factor ``b1`` when the actual flip angles are ``vfa_flip_scale`` times the nominal ones
    (noiseless SPGR signals fitted with the nominal angles and the B1 map). ``config``: a
    truth's ``config`` record or a site's settings (``vfa_flip_angles_deg``, ``vfa_tr_s`` and
    ``vfa_flip_scale``, defaults those of :class:`~bids_agquant.simulate.config.PhantomConfig`)."""
    default = make_config()
    flips = np.asarray(config.get("vfa_flip_angles_deg", default.vfa_flip_angles_deg), float)
    tr = float(config.get("vfa_tr_s", default.vfa_tr_s))
    k = float(config.get("vfa_flip_scale", default.vfa_flip_scale))
    signal = spgr_signal(np.ones(1), np.full(1, t1_s), flips * k, tr, np.full(1, b1))
    fit = VFAModel(flips, tr).fit(signal, b1=np.full(1, b1))
    return float(fit.t1.ravel()[0]) / t1_s


def site_of(cohort: dict, participant: str) -> dict:
    """The ``cohort.json`` site record of ``participant`` (label without ``sub-``)."""
    for site in cohort["sites"]:
        if participant in site["participants"]:
            return site
    raise KeyError(f"participant {participant!r} is in no site of the cohort")


def _merge_site(site_bids: Path, out: Path) -> None:
    """Move the site's participants (raw and every derivative) into ``out``; dataset-level files
    come from the first site (they are the same for every site but participants.tsv, merged
    by the caller)."""
    for src in sorted(site_bids.rglob("*")):
        rel = src.relative_to(site_bids)
        if any(part.startswith("sub-") for part in rel.parts[:-1]):
            continue                                   # moved with its sub-* folder
        dst = out / rel
        if src.is_dir() and src.name.startswith("sub-"):
            if dst.exists():
                raise FileExistsError(f"{dst}: participant label used by two sites")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
        elif src.is_file() and not dst.exists() and rel.name != "participants.tsv":
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def _jsonable(settings: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
