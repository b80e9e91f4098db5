"""Per-participant report ``OUTPUT_DIR/sub-<p>.html``: one self-contained page a radiologist can
check at a glance.

Sections: the plan that was run; registration checks (contours of the reference T1w over every
session's T1w resampled into the reference space); T1, signal-enhancement (SE) and concentration
maps over the reference anatomy with lesion outlines, on axial slices through the largest
lesions; the lesion table; warnings; software versions.

Everything is read from the participant's derivatives in OUTPUT_DIR (so the report can be
rebuilt at any time), found through the output registry
(:func:`bids_agquant.bids.derivatives.list_outputs`: a file is shown only when the registry names
it so); missing pieces give a note in the report, never an error. Call it at the end of a
participant run::

    from bids_agquant.reports.participant import build_participant_report
    build_participant_report(config.output_dir, plan.participant, plan=plan,
                             bids_dir=config.bids_dir, warnings=run_warnings)
"""
from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from nibabel.processing import resample_from_to  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_agquant.bids import derivatives as D  # noqa: E402
from bids_agquant.bids import scaling  # noqa: E402
from bids_agquant.bids.plan import describe_b1  # noqa: E402
from bids_agquant.interfaces import geometry as G  # noqa: E402
from bids_agquant.reports import html as H  # noqa: E402
from bids_agquant.bids import columns as C  # noqa: E402
from bids_agquant.bids import tables as T  # noqa: E402
from bids_agquant.bids.tables import software_versions  # noqa: E402
from bids_agquant.reports._io import write_text_atomic  # noqa: E402
from bids_agquant.reports import display as V  # noqa: E402
from bids_agquant.reports import fitcheck as Q  # noqa: E402
from bids_agquant.reports import render3d as R3  # noqa: E402
from bids_agquant.reports.citation import CITATION_FILE  # noqa: E402
from bids_agquant.reports import resources as RS  # noqa: E402
from bids_agquant.qmri import qa as QA  # noqa: E402
from bids_agquant.qmri.relaxivity import canonical_agent  # noqa: E402
from bids_agquant.reports.figures import STYLE  # noqa: E402

__all__ = ["build_participant_report", "find_maps", "MapFile", "SHOWN_MAPS"]

LOG = logging.getLogger("bids_agquant.reports")

#: Registry keys (:data:`bids_agquant.bids.derivatives.OUTPUTS`) of the NIfTI outputs the report
#: reads: the maps per contrast state and the participant's label images.
SHOWN_MAPS = ("T1map", "R1map", "M0map", "delta_r1", "enhancement", "concentration",
              "brain_mask", "lesion_dseg", "control_dseg")


@dataclass(frozen=True)
class MapFile:
    """One NIfTI output of the participant: its registry key, session and contrast agent."""
    path: Path
    key: str                  # key of bids_agquant.bids.derivatives.OUTPUTS (SHOWN_MAPS)
    session: str | None
    agent: str | None         # ce- label, None for pre-contrast
    entities: dict            # the source entities the registry names it from


def find_maps(output_dir: Path | str, participant: str) -> list[MapFile]:
    """The registered NIfTI outputs of ``sub-<participant>`` the report shows, sorted by path."""
    return [MapFile(f.path, f.key, f.entities.get("ses"), f.entities.get("ce"), dict(f.entities))
            for f in D.list_outputs(output_dir, participant) if f.key in SHOWN_MAPS]


# ------------------------------------------------------------------------------------------
# Image helpers (display only: nothing here changes a number)
# ------------------------------------------------------------------------------------------
def _load(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    return nib.as_closest_canonical(img)


def _on_grid(img: nib.Nifti1Image, ref: nib.Nifti1Image, order: int = 1) -> np.ndarray:
    """Data of ``img`` on the grid of ``ref`` (resampled for display when the grids differ)."""
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    if data.ndim > 3:
        data = data[..., 0]
    if data.shape == ref.shape[:3] and np.allclose(img.affine, ref.affine, atol=1e-3):
        return data
    res = resample_from_to(nib.Nifti1Image(data, img.affine), (ref.shape[:3], ref.affine),
                           order=order, mode="constant", cval=np.nan if order else 0)
    return np.asarray(res.dataobj, dtype=np.float32)


def _robust_range(a: np.ndarray, lo=1.0, hi=99.5) -> tuple[float, float]:
    v = a[np.isfinite(a)]
    v = v[v != 0] if (v != 0).any() else v
    if v.size == 0:
        return 0.0, 1.0
    a0, a1 = np.percentile(v, [lo, hi])
    return float(a0), float(a1 if a1 > a0 else a0 + 1.0)


def _choose_slices(ref_shape, lesions: np.ndarray | None, n: int = 3,
                   controls: np.ndarray | None = None) -> list[int]:
    """Axial slices through the largest lesions (or evenly through the head without lesions);
    when none of them crosses a control region, the slice of the smallest of them gives way to
    the slice through most control voxels (the captions name their outline: it must be seen)."""
    chosen = _lesion_slices(ref_shape, lesions, n)          # largest lesion first
    if controls is not None and (controls > 0).any() and chosen:
        area = (controls > 0).sum(axis=(0, 1))
        if not area[chosen].any():
            chosen = [*chosen[:n - 1], int(np.argmax(area))]
    return sorted(chosen)


def _lesion_slices(ref_shape, lesions: np.ndarray | None, n: int) -> list[int]:
    if lesions is not None and (lesions > 0).any():
        labels = [int(v) for v in np.unique(lesions) if v > 0]
        sizes = ndimage.sum(lesions > 0, lesions, labels)
        chosen = []
        for lab in [labels[i] for i in np.argsort(sizes)[::-1]]:
            zs = np.nonzero((lesions == lab).any(axis=(0, 1)))[0]
            area = [(lesions[:, :, z] == lab).sum() for z in zs]
            z = int(zs[int(np.argmax(area))])
            if all(abs(z - c) > 2 for c in chosen):
                chosen.append(z)
            if len(chosen) == n:
                break
        return chosen
    nz = ref_shape[2]
    return [int(nz * f) for f in (0.35, 0.5, 0.65)][:n]


def _plane_of(a: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Voxel plane ``index`` of ``plane`` (display.PLANES) of a volume on a canonical grid, as
    ``imshow(origin="lower")`` draws it: the plane's horizontal axis across, vertical up."""
    h, v, cut = V.PLANES[plane]
    cut2d = a[(slice(None),) * cut + (index,)]      # the remaining axes, in order (a view)
    return cut2d.T if h < v else cut2d


def _slice(a: np.ndarray, z: int) -> np.ndarray:
    return _plane_of(a, "axial", z)


def display_plane(img: nib.Nifti1Image, plane: str, index: int) -> tuple[np.ndarray, dict]:
    """(2-D array as the figures draw it, orientation labels they write) of voxel plane
    ``index`` of ``plane`` of ``img``, read as every image of the report is (reoriented to the
    closest canonical grid, :func:`_load`)."""
    img = nib.as_closest_canonical(img)
    return _plane_of(_data3d(img), plane, index), V.plane_labels(img.affine, plane)


def _aspect(img: nib.Nifti1Image) -> float:
    zooms = img.header.get_zooms()[:3]
    return float(zooms[1] / zooms[0])


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor=fig.get_facecolor())
    return buf.getvalue()


def _outline(ax, lesions2d: np.ndarray | None, controls2d: np.ndarray | None = None):
    for kind, labels2d, width in (("lesions", lesions2d, 0.9), ("controls", controls2d, 0.9)):
        if labels2d is not None and (labels2d > 0).any():
            _, colour, style = V.OUTLINES[kind]
            ax.contour(labels2d > 0, levels=[0.5], colors=[colour], linewidths=width,
                       linestyles=style, origin="lower")


def _orientation(ax, labels: dict, colour: str = "white"):
    """The anatomical direction at the four edges of a panel (from :func:`display.plane_labels`)."""
    kw = dict(color=colour, fontsize=7.5, fontweight="bold", transform=ax.transAxes,
              in_layout=False,                   # inside the panel: no layout work
              path_effects=[patheffects.withStroke(linewidth=1.8, foreground="black")])
    ax.text(0.015, 0.5, labels["left"], ha="left", va="center", **kw)
    ax.text(0.985, 0.5, labels["right"], ha="right", va="center", **kw)
    ax.text(0.5, 0.985, labels["top"], ha="center", va="top", **kw)
    ax.text(0.5, 0.015, labels["bottom"], ha="center", va="bottom", **kw)


def _blank(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    ax.grid(False)


def _bbox(mask: np.ndarray | None, shape, margin: int = 3) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` (+ margin voxels), the whole volume without a mask."""
    if mask is None or not mask.any():
        return tuple(slice(0, n) for n in shape[:3])
    out = []
    for ax in range(3):
        idx = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, shape[ax])))
    return tuple(out)


def _head_mask(ref: np.ndarray) -> np.ndarray:
    """Rough head mask of a T1w for cropping when no brain mask is available."""
    a = np.nan_to_num(ref)
    thr = 0.15 * float(np.percentile(a[a > 0], 99)) if (a > 0).any() else 0.0
    return ndimage.binary_opening(a > thr, iterations=2)


def _registration_region(ref_data, brain) -> np.ndarray:
    """The region the registration figure outlines: the brain mask, else a rough head mask."""
    return brain if brain is not None and brain.any() else _head_mask(ref_data)


def _registration_planes(region) -> tuple[int, int, int]:
    """Voxel indices (x, y, z) of the sagittal, coronal and axial planes of the registration
    figure: through the centre of the region (of the grid when the region is empty)."""
    if region.any():
        return tuple(int(round(c)) for c in ndimage.center_of_mass(region))
    return tuple(s // 2 for s in region.shape[:3])


def _registration_figure(ref_img, ref_data, moving: list[tuple[str, np.ndarray]],
                         region: np.ndarray, tag: str = "") -> bytes:
    """Each session's image (grey) under contours of the reference: the outline of ``region``
    (yellow) and the white/grey-matter boundary (orange), in the three orthogonal planes of
    :func:`_registration_planes` (the session images need hold only those planes). ``tag`` is
    written in the first panel (the figures of a flicker pair differ only by it)."""
    box = _bbox(region, ref_data.shape, margin=4)
    # smoothed inside the box only (what the panels show; the margin covers the kernels)
    smooth = np.zeros(ref_data.shape, dtype=np.float64)
    smooth[box] = ndimage.gaussian_filter(np.nan_to_num(ref_data[box]).astype(np.float64), 1.0)
    inside = smooth[region] if region.any() else smooth.ravel()
    q25, q75 = np.percentile(inside, [25, 75]) if inside.size else (0.0, 1.0)
    inner_level = float((q25 + q75) / 2)
    outline = np.zeros(region.shape, dtype=np.float32)
    outline[box] = ndimage.gaussian_filter(region[box].astype(np.float32), 0.8)
    cx, cy, cz = _registration_planes(region)
    zooms = ref_img.header.get_zooms()[:3]
    bx, by, bz = box
    views = [("axial", lambda a: _plane_of(a[bx, by, :], "axial", cz), zooms[1] / zooms[0]),
             ("coronal", lambda a: _plane_of(a[bx, :, bz], "coronal", cy), zooms[2] / zooms[0]),
             ("sagittal", lambda a: _plane_of(a[:, by, bz], "sagittal", cx),
              zooms[2] / zooms[1])]
    # the reference's contours are the same in every row: cut once (not per panel)
    outlines = [cut(outline) for _, cut, _ in views]
    tissue = [np.where(cut(region), cut(smooth), np.nan) for _, cut, _ in views]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9.0, 2.5 * len(moving) + 0.3), facecolor="#0b0f17",
                     layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(moving), 3))
        for row, (label, data) in enumerate(moving):
            vmin, vmax = _robust_range(data)
            for col, (vname, cut, asp) in enumerate(views):
                ax = axes[row, col]
                ax.set_facecolor("black")
                ax.imshow(np.nan_to_num(cut(data)), cmap="gray", vmin=vmin, vmax=vmax,
                          origin="lower", aspect=asp, interpolation="bilinear")
                ax.contour(outlines[col], levels=[0.5], colors=[V.OUTLINES["brain"][1]],
                           linewidths=0.8, origin="lower")
                ax.contour(tissue[col], levels=[inner_level],
                           colors=[V.OUTLINES["tissue"][1]], linewidths=0.6, origin="lower")
                _orientation(ax, V.plane_labels(ref_img.affine, vname), "#e5e7eb")
                _blank(ax)
                if col == 0:
                    ax.set_ylabel(label, color="white", fontsize=10)
                    if tag:
                        ax.text(0.03, 0.97, tag, color="white", fontsize=9, ha="left",
                                va="top", transform=ax.transAxes, fontweight="bold",
                                in_layout=False, bbox=dict(facecolor="#1f6fb4", pad=2,
                                                           edgecolor="none"))
                if row == 0:
                    ax.set_title(vname, color="white", fontsize=10, fontweight="normal")
    return _png(fig)


def _maps_figure(title: str, rows: list[tuple[str, np.ndarray | None, dict]],
                 anat: np.ndarray, labels: tuple, slices: list[int], aspect: float,
                 orientation: dict) -> bytes:
    """Rows = states, columns = axial ``slices``; each row's map over the anatomy with its
    colour scale (``style``: a :class:`display.Scale` as a dict, ``mask_small``: transparent
    below). ``labels`` = (lesions, controls, brain) on the grid of ``anat`` (None if absent)."""
    lesions, controls, brain = labels
    avmin, avmax = _robust_range(anat)
    ncol = len(slices)
    anat_planes = {z: np.nan_to_num(_slice(anat, z)) for z in slices}  # not per panel
    # one colour bar for the figure when every row has the same scale, else one per row
    one_scale = len({(st["vmin"], st["vmax"], st["cmap"]) for _, d, st in rows
                     if d is not None}) == 1
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(2.5 * ncol + 1.2, 2.5 * len(rows) + 0.4), facecolor="white",
                     layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(rows), ncol))
        for r, (state, data, style) in enumerate(rows):
            im = None
            for c, z in enumerate(slices):
                ax = axes[r, c]
                ax.set_facecolor("black")
                ax.imshow(anat_planes[z], cmap="gray", vmin=avmin, vmax=avmax,
                          origin="lower", aspect=aspect)
                if data is not None:
                    im = ax.imshow(_shown(_slice(data, z), style,
                                          None if brain is None else _slice(brain, z)),
                                   cmap=style["cmap"], vmin=style["vmin"], vmax=style["vmax"],
                                   origin="lower", aspect=aspect, alpha=style.get("alpha", 0.85),
                                   interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "not available", color="white", ha="center",
                            va="center", transform=ax.transAxes, fontsize=8)
                _outline(ax, None if lesions is None else _slice(lesions, z),
                         None if controls is None else _slice(controls, z))
                _orientation(ax, orientation)
                _blank(ax)
                if r == 0:
                    ax.set_title(f"{title}, axial z = {z}", fontsize=9, fontweight="normal")
                if c == 0:
                    ax.set_ylabel(state, fontsize=9)
            if im is not None and (not one_scale or r == len(rows) - 1):
                cb = fig.colorbar(im, ax=axes if one_scale else axes[r, :], pad=0.01,
                                  shrink=0.6 if one_scale and len(rows) > 2 else 0.85,
                                  aspect=15 * (2 if one_scale and len(rows) > 2 else 1),
                                  extend="both" if style["vmin"] > 0 else "max")
                cb.set_label(style["unit"], fontsize=8)
                cb.ax.tick_params(labelsize=7)
    return _png(fig)


def _shown(d2: np.ndarray, style: dict, brain2d: np.ndarray | None) -> np.ndarray:
    """The values of one panel that are drawn: inside the brain, above ``mask_small`` (uptake
    maps), positive (T1); NaN (transparent) elsewhere."""
    d = d2.astype(float)
    if brain2d is not None:
        d = np.where(brain2d, d, np.nan)
    if style.get("mask_small") is not None:
        d = np.where(d >= style["mask_small"], d, np.nan)
    if style.get("mask_nonpositive"):
        d = np.where(d > 0, d, np.nan)
    return d


# ------------------------------------------------------------------------------------------
# Pieces of the page
# ------------------------------------------------------------------------------------------
def _plan_html(plan, bids_dir: Path | None) -> str:
    if plan is None:
        return '<p class="note">The plan object was not passed to the report builder; the ' \
               "states below are those found in the outputs.</p>"

    def rel(p):
        if p is None:
            return "-"
        p = Path(p)
        try:
            return str(p.relative_to(bids_dir)) if bids_dir else p.name
        except ValueError:
            return p.name
    head = (f'<dl class="plan"><dt>baseline session</dt><dd>ses-{H.esc(plan.baseline_session)}'
            + (f" ({H.esc(plan.baseline_reason)})" if getattr(plan, "baseline_reason", "") else "")
            + "</dd>"
            + (f"<dt>session order</dt><dd>{H.esc(plan.session_order)}</dd>"
               if getattr(plan, "session_order", "") else "")
            + f'<dt>reference space</dt><dd><code>{H.esc(rel(plan.reference_t1w))}</code></dd>')
    lm = getattr(plan, "lesion_mask", None)
    head += (f"<dt>lesion mask</dt><dd><code>{H.esc(rel(lm.path))}</code> ({H.esc(lm.kind)}, "
             f"drawn on ses-{H.esc(lm.session)})</dd>" if lm else
             "<dt>lesion mask</dt><dd>none</dd>")
    cov = getattr(plan, "covariates", {}) or {}
    if cov:
        head += "<dt>covariates</dt><dd>" + ", ".join(
            f"{H.esc(k)} = {H.esc(H.fmt(v))}" for k, v in cov.items()) + "</dd>"
    head += "</dl>"
    states, images = [], []
    for st in plan.states:
        v = st.vfa
        files = [f for f in ((st.t1w,) if st.t1w else ()) + (tuple(v.files) if v else ())]
        scaled = [f"{Path(f).name}{scaling.describe(plan, f)}" for f in files
                  if scaling.describe(plan, f)]
        label = {"session": f"ses-{st.session}",
                 "state": f"post-contrast ({st.agent})" if st.is_post else "pre-contrast"}
        states.append({
            **label,
            "contrast evidence": st.evidence or "-",
            "pre-contrast reference": f"ses-{st.pre_session or plan.baseline_session}"
            if st.is_post else "-"})
        images.append({
            **label,
            "T1w": Path(st.t1w).name if st.t1w else "-",
            "VFA flip angles (deg)": ", ".join(f"{a:g}" for a in v.flip_angles_deg) if v else "-",
            "TR (ms)": f"{v.tr_s * 1000:g}" if v else "-",
            "B1 map": describe_b1(v, lambda p: Path(p).name) if v else "-",
            "intensity scaling": "; ".join(scaled) or "as stored"})
    return (head
            + H.table_html(["session", "state", "contrast evidence", "pre-contrast reference"],
                           states, css_class="data wrap")
            + H.table_html(["session", "state", "T1w", "VFA flip angles (deg)", "TR (ms)",
                            "B1 map", "intensity scaling"], images, css_class="data wrap"))


def _qa_section(output_dir: Path, participant: str):
    """The QA table as a matrix: one row per state, one column per (item, metric); flagged
    cells in red, their list above. No section without the table."""
    path = output_dir / D.participant_path("qa_table", participant)
    if not path.is_file():
        return None
    rows = T.read_tsv(path).to_dict("records")
    states = list(dict.fromkeys((T.cell(r, "session_id"), T.cell(r, "contrast_state"))
                                for r in rows))
    metrics = sorted(dict.fromkeys((T.cell(r, "item"), T.cell(r, "metric")) for r in rows),
                     key=lambda im: (QA.metric_rank(im[1]), im[0]))
    cell = {(T.cell(r, "session_id"), T.cell(r, "contrast_state"), T.cell(r, "item"),
             T.cell(r, "metric")): r for r in rows}
    head = "".join(f"<th>{H.esc(item.replace('_', ' '))}<br><code>{H.esc(metric)}</code></th>"
                   for item, metric in metrics)
    body, flagged = [], []
    for ses, state in states:
        tds = [f"<td>{H.esc(ses)}</td><td>{H.esc(state)}</td>"]
        for item, metric in metrics:
            r = cell.get((ses, state, item, metric))
            if r is None:
                tds.append('<td class="num"></td>')
                continue
            value = T.cell(r, "value")
            text = "n/a" if value is None else H.fmt(float(value))
            rng = f"{T.cell(r, 'low')} to {T.cell(r, 'high')} {T.cell(r, 'unit')}"
            if str(T.cell(r, "qa_flag")).lower() == "true":
                flagged.append(f"{ses} {state}: {item.replace('_', ' ')} {metric} = {text} "
                               f"(range {rng})")
                tds.append(f'<td class="num qa-flag" title="flagged: outside {H.esc(rng)}">'
                           f"{H.esc(text)} ⚠</td>")
            else:
                tds.append(f'<td class="num" title="within {H.esc(rng)}">{H.esc(text)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    table = (f'<div class="table-wrap"><table class="data fit qa"><thead><tr><th>session</th>'
             f"<th>state</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
    if flagged:
        callout = ('<div class="callout warn"><b>QA flags</b>: check these sessions before '
                   "using their numbers.<ul>" + "".join(f"<li>{H.esc(f)}</li>" for f in flagged)
                   + "</ul></div>")
    else:
        callout = '<div class="callout ok">No QA flag: every metric lies within its range.</div>'
    note = ('<p class="note">Hover a value for its range. Metrics and thresholds: '
            f"<code>docs/qa.md</code>. File: <code>{H.esc(path.name)}</code> (+ JSON with the "
            "thresholds).</p>")
    return ("qa", "QA", H.section("qa", "Quality control per session", callout + table + note,
                                  "White-matter T1 and its stability, B1 map, VFA fit, SNR and "
                                  "every registration, against documented ranges."))


def _n_qa_flags(output_dir: Path, participant: str) -> int | None:
    path = output_dir / D.participant_path("qa_table", participant)
    if not path.is_file():
        return None
    df = T.read_tsv(path)
    return int((df["qa_flag"].astype(str).str.lower() == "true").sum())


def _read_lesion_table(path: Path) -> tuple[list[str], list[dict]]:
    """Columns and text rows of a lesion table; missing cells are ``"n/a"``."""
    df = T.read_tsv(path)
    return list(df.columns), [{k: T.cell(r, k) or "n/a" for k in df.columns}
                              for r in df.to_dict("records")]


def _lesion_table_html(path: Path) -> str:
    if not path.is_file():
        return f'<p class="empty">No lesion table ({H.esc(path.name)}) yet.</p>'
    cols, rows = _read_lesion_table(path)
    show = [c for c in ("session_id", "contrast_agent", "lesion_id", "longest_diameter_mm",
                        "measurable", "volume_mm3", "se_mean_percent", "se_sd_percent",
                        "t1_pre_mean_s", "t1_post_mean_s", "delta_r1_mean_per_s",
                        "conc_mean_mM", "conc_ci_low_mM", "conc_ci_high_mM", "conc_lod_mM",
                        "conc_quantifiable", "conc_mean_mg_per_L", "n_voxels") if c in cols]
    typed = []
    for r in rows:
        t = {}
        for c in show:
            v = r.get(c, "n/a")
            try:
                t[c] = float(v) if c not in ("session_id", "contrast_agent", "lesion_id",
                                             "measurable", "conc_quantifiable") and v != "n/a" \
                    else v
            except ValueError:
                t[c] = v
        typed.append(t)
    heads = C.headers(C.LESION_TABLE)

    def hl(r):
        if str(r.get("lesion_id", "")).startswith("control"):
            return "muted"
        return None
    return (H.table_html(show, typed, heads, highlight=hl, css_class="data fit")
            + '<p class="note">Measurable = longest axial diameter \u2265 10 mm (RECIST 1.1); '
              "95 % CI and LOD of the mean concentration from the images' noise "
              "(docs/uncertainty.md); "
              "grey rows are healthy-tissue control regions, which should show no SE and no "
              f"concentration. File: <code>{H.esc(path.name)}</code>.</p>")


def _versions(output_dir: Path) -> dict:
    v = software_versions()
    desc = Path(output_dir) / "dataset_description.json"
    try:
        gen = json.loads(desc.read_text()).get("GeneratedBy", [])
        for g in gen if isinstance(gen, list) else [gen]:
            if g.get("Container"):
                c = g["Container"]
                v["container"] = c.get("URI") or c.get("Tag") or c.get("Type", "")
    except (OSError, ValueError, AttributeError):
        pass
    return v


#: The level of a log line: after the time stamp (``2024-01-02 09:00:01,002 WARNING name: ...``).
_LOG_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.,]+\s+(WARNING|ERROR|CRITICAL)\b[\s:|\-\]]*(.*)$")


def _log_messages(output_dir: Path, participant: str) -> tuple[list[str], list[str]]:
    """(errors, warnings): the ERROR/CRITICAL and WARNING messages of the participant's newest
    run log (``OUTPUT_DIR/logs/sub-<p>_*.log``) and of log files inside ``sub-<p>/``, without
    time stamp and logger name; the lines that follow a message (a traceback) are not read."""
    errors, warnings = [], []
    runs = sorted((Path(output_dir) / "logs").glob(f"sub-{participant}_*.log"))
    logs = runs[-1:] + sorted((Path(output_dir) / f"sub-{participant}").rglob("*.log"))
    for log in logs:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            m = _LOG_LEVEL.match(line)
            if m is None:
                continue
            msg = re.sub(r"^[A-Za-z_][\w.]*: ", "", m.group(2).strip())      # the logger name
            out = warnings if m.group(1) == "WARNING" else errors
            if msg and msg not in out:
                out.append(msg)
    return errors, warnings


def _log_warnings(output_dir: Path, participant: str) -> list[str]:
    """The WARNING messages of :func:`_log_messages`."""
    return _log_messages(output_dir, participant)[1]


#: The mosaics of the maps section: display key (display.QUANTITIES), which states (``all``
#: or ``post``), caption.
_MOSAICS = (
    ("T1map", "all", "T1 from the variable-flip-angle fit"),
    ("delta_r1", "post", "\u0394R1 = R1 post \u2212 R1 pre"),
    ("enhancement", "post",
     "Signal enhancement 100 \u00d7 (post \u2212 pre) / pre of the T1w images"),
    ("concentration", "post", "Gd concentration \u0394R1 / r1 from the VFA T1 maps"),
)
#: Maps of uptake (drawn only above their noise): the lowest threshold, in the map's unit.
_UPTAKE_FLOOR = {"enhancement": 2.0, "delta_r1": 0.0, "concentration": 0.0}


def _reference_t1w(plan, bids_dir, maps) -> Path | None:
    """The reference T1w: the plan's, else the maps' sidecars' ``SpatialReference`` in
    BIDS_DIR (the registry names no T1w output)."""
    if plan is not None and getattr(plan, "reference_t1w", None) and Path(
            plan.reference_t1w).is_file():
        return Path(plan.reference_t1w)
    if bids_dir is None:
        return None
    for m in maps:
        side = D.read_sidecar(m.path)
        ref = side.get("SpatialReference") if isinstance(side, dict) else None
        if isinstance(ref, str) and ref:
            rel = ref.split(":", 2)[-1] if ref.startswith("bids:") else ref
            cand = Path(bids_dir) / rel.lstrip("/")
            if cand.is_file():
                return cand
    return None


def _raw_t1w_for(xfm: D.FoundOutput, participant: str, plan, bids_dir) -> Path | None:
    """The native T1w a ``from-orig_to-T1w`` transform belongs to (plan, else BIDS_DIR)."""
    ses, ce = xfm.entities.get("ses"), xfm.entities.get("ce")
    if plan is not None:
        for st in plan.states:
            if st.t1w and st.session == ses and (st.agent_label or None) == ce:
                return Path(st.t1w)
    if bids_dir is None:
        return None
    folder = Path(bids_dir) / f"sub-{participant}" / (f"ses-{ses}" if ses else "") / "anat"
    for ext in (".nii.gz", ".nii"):
        raw = folder / D.format_bids_name(dict(xfm.entities), "T1w", ext)
        if raw.is_file():
            return raw
    return None


class _NoAnts(Exception):
    """antspyx (which reads ITK transforms) is not installed."""


def _moved_t1w(raw: Path, xfm: D.FoundOutput, grid: nib.Nifti1Image,
               planes: tuple[int, int, int]) -> np.ndarray:
    """The native T1w ``raw`` through the pipeline's transform on the three ``planes`` (x, y, z
    voxel indices) of the display ``grid``, NaN elsewhere: only what the figure shows is
    resampled (a whole 1 mm volume per session took about a second)."""
    data, affine, _ = G.load(raw)
    try:
        transform = G.read_transform(xfm.path)
    except ImportError as exc:
        raise _NoAnts() from exc
    return Q.on_planes(data, affine, grid.shape, grid.affine, transform,
                       list(enumerate(planes)), fill=0.0)


def _session_t1ws(output_dir, participant, plan, bids_dir, ref_path, grid, planes, notes):
    """(label, image on the display ``grid``) of every session T1w but the reference: the native
    T1w resampled on the figure's ``planes`` through its registered ``xfm_t1w`` transform
    (display only, see :func:`_moved_t1w`). A transform that cannot be applied gives a one-line
    note (details in the debug log).
    """
    xfms = sorted(D.find_outputs(output_dir, participant, "xfm_t1w"),
                  key=lambda f: _natural_key(f.path.name))
    out, done = [], set()
    for xfm in xfms:
        key = (xfm.entities.get("ses"), xfm.entities.get("ce"))
        raw = _raw_t1w_for(xfm, participant, plan, bids_dir)
        if key in done or raw is None or Path(raw).resolve() == Path(ref_path).resolve():
            continue
        try:
            out.append((_state_label(*key), _moved_t1w(raw, xfm, grid, planes)))
        except _NoAnts:
            notes.append("registration check skipped: antspyx is not installed")
            break
        except Exception as exc:  # noqa: BLE001 - a report must not fail on one image
            LOG.debug("registration check of %s skipped", xfm.path, exc_info=True)
            notes.append(f"registration check of {_state_label(*key)} skipped: its T1w or "
                         f"transform could not be read ({type(exc).__name__})")
            continue
        done.add(key)
    order = _state_order(plan)
    return sorted(out, key=lambda x: (order.get(x[0], len(order)), _natural_key(x[0])))


def _state_order(plan) -> dict:
    """{state label: position in the plan} (empty without a plan)."""
    if plan is None:
        return {}
    return {_state_label(st.session, st.agent_label if st.is_post else None): i
            for i, st in enumerate(plan.states)}


def _state_label(session: str | None, agent: str | None) -> str:
    return f"ses-{session} {agent or 'pre'}"


_natural_key = T.natural_key


def _data3d(img: nib.Nifti1Image) -> np.ndarray:
    d = np.asanyarray(img.dataobj, dtype=np.float32)
    return d[..., 0] if d.ndim > 3 else d



def _map_states(maps, plan) -> list:
    """Every state ``(session, agent)`` with a shown map, in the plan's order (sessions, then
    pre before post)."""
    order = {}
    if plan is not None:
        for i, st in enumerate(plan.states):
            order.setdefault(st.session, i)
    return sorted({(m.session, m.agent) for m in maps if m.key in V.QUANTITIES},
                  key=lambda k: (order.get(k[0], 10 ** 6), _natural_key(k[0] or ""),
                                 k[1] or ""))


def _noise(d, background) -> float:
    """Robust SD (1.4826 x MAD) of a map in lesion-free brain: its noise level."""
    if d is None or background is None or not background.any():
        return 0.0
    v = d[background]
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else 0.0


def _mosaic_style(key, agent, d, lesions, brain) -> dict:
    """Colour scale of one row: the quantity's range for the state's agent
    (:func:`display.scale_for`, the same in every row of that agent); uptake maps transparent
    below max(twice their noise in lesion-free brain, 5 % of the range, the floor)."""
    scale = V.scale_for(key, agent)
    style = dict(cmap=scale.cmap, vmin=scale.vmin, vmax=scale.vmax, unit=f"{V.QUANTITIES[key].title} ({scale.unit})")
    if key == "T1map":
        return dict(style, alpha=1.0, mask_nonpositive=True)
    if key not in _UPTAKE_FLOOR:
        return dict(style, alpha=1.0)
    background = brain
    if background is not None and lesions is not None:
        background = background & (lesions == 0)
    thr = max(0.05 * (scale.vmax - scale.vmin), 2.0 * _noise(d, background), _UPTAKE_FLOOR[key])
    return dict(style, mask_small=thr, alpha=0.85)


def _maps_note(keys, agents) -> str:
    ranges = "; ".join(V.range_text(k, agents if k != "T1map" else None) for k in keys)
    return (f'<p class="note">Rows are contrast states, columns axial slices through the largest '
            f"lesions, over the reference T1w; the letters at the panel edges are the anatomical "
            f"directions (R/L, A/P, S/I) read from the image's orientation. One colour scale per quantity and "
            f"agent, the same in every session: {H.esc(ranges)}. "
            f"{V.outline_text('lesions').capitalize()}: lesion outlines; "
            f"{H.esc(V.outline_text('controls'))}: healthy-tissue control regions. Maps are shown "
            f"inside the brain mask; SE, \u0394R1 and concentrations are transparent below twice "
            f"their noise level in lesion-free brain (robust SD), 5 % of their colour range and, "
            f"for SE, {_UPTAKE_FLOOR['enhancement']:g} %.</p>")


_NO_MAPS = '<p class="empty">No T1, \u0394R1, SE or concentration map was found.</p>'


def _crop_box(anat, brain):
    bx, by, _ = _bbox(brain if brain is not None else _head_mask(anat), anat.shape, margin=3)
    return lambda a: None if a is None else a[bx, by, :]


def _maps_section(maps, ref_img, anat, labels, slices, plan) -> str:
    """One mosaic per quantity of :data:`_MOSAICS`: its states as rows."""
    lesions, controls, brain = labels
    crop = _crop_box(anat, brain)
    states = _map_states(maps, plan)
    if not states:
        return _NO_MAPS
    anat, labels = crop(anat), tuple(crop(a) for a in labels)

    def load(state, key):
        m = next((m for m in maps if (m.session, m.agent) == state and m.key == key), None)
        return None if m is None else crop(_on_grid(_load(m.path), ref_img))

    figures, shown = [], []
    for key, which, caption in _MOSAICS:
        rows = []
        for state in states:
            if which == "post" and not state[1]:
                continue
            d = load(state, key)
            rows.append((_state_label(*state), d,
                         _mosaic_style(key, state[1], d, labels[0], labels[2])))
        if not rows or all(r[1] is None for r in rows):
            continue
        shown.append(key)
        png = _maps_figure(V.QUANTITIES[key].title, rows, anat, labels, slices, _aspect(ref_img),
                           V.plane_labels(ref_img.affine, "axial"))
        figures.append(f"<h3>{H.esc(caption)}</h3>" + H.image_html(
            png, "image/png", "", alt=caption, css_class="figure mosaic"))
    return ("".join(figures) + _maps_note(shown, [s[1] for s in states if s[1]])
            if figures else _NO_MAPS)


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------
def _display_grid(plan, bids_dir, maps, notes):
    """(reference T1w path or None, image of the display grid or None)."""
    ref_path = _reference_t1w(plan, bids_dir, maps)
    if ref_path is not None:
        return ref_path, _load(ref_path)
    if maps:
        notes.append("reference T1w not found (pass plan= or bids_dir=): the first map is the "
                     "display grid")
        return None, _load(maps[0].path)
    return None, None


def _label_images(maps, ref_img):
    """(lesion labels, control labels, brain mask) on the display grid (None when absent)."""
    if ref_img is None:
        return None, None, None

    def first(key):
        return next((m.path for m in maps if m.key == key), None)
    les, ctl, bm = first("lesion_dseg"), first("control_dseg"), first("brain_mask")
    brain = None if bm is None else _on_grid(_load(bm), ref_img, order=0) > 0.5
    lesions = None if les is None else np.rint(_on_grid(_load(les), ref_img, order=0)).astype(int)
    controls = None if ctl is None else np.rint(
        _on_grid(_load(ctl), ref_img, order=0)).astype(int)
    return lesions, controls, brain


def _summary_section(maps, lesion_tsv: Path, errors, warnings, n_qa_flags=None) -> tuple:
    sessions = sorted({m.session for m in maps if m.session}, key=_natural_key)
    n_meas = 0
    if lesion_tsv.is_file():
        _, lrows = _read_lesion_table(lesion_tsv)
        n_meas = len({r["lesion_id"] for r in lrows if str(r.get("measurable")).lower()
                      in ("true", "1", "yes") and not r["lesion_id"].startswith("control")})
    cards = [("sessions", str(len(sessions)), ", ".join(f"ses-{s}" for s in sessions) or "-"),
             ("measurable lesions", str(n_meas), "longest diameter \u2265 10 mm"),
             ("maps found", str(len(maps)), "NIfTI outputs of this participant"),
             ("warnings", str(len(warnings)), "see below" if warnings else "none")]
    if n_qa_flags is not None:
        cards.append(("QA flags", str(n_qa_flags),
                      "see Quality control" if n_qa_flags else "every metric in range"))
    if errors:
        cards.append(("errors", str(len(errors)), "see below"))
    return ("summary", "Summary", H.section(
        "summary", "Summary", H.cards_html(cards) + H.messages_html(errors, warnings)))


_T1W_CAPTION = (
    "Each row is one session's T1w brought into the reference space with the transform the "
    "pipeline computed; {brain} and {tissue} lines are intensity contours of the reference T1w "
    "(baseline pre-contrast). They should follow the same edges in every row.")
_VFA_CAPTION = (
    "Each row is one state's VFA image of the highest flip angle (the one registered to the "
    "session T1w), on the reference grid, alternating: <b>before</b> registration (placed by its "
    "scanner coordinates only) and <b>after</b> (through the pipeline's VFA \u2192 T1w \u2192 "
    "reference transform, the one its T1, \u0394R1 and concentration maps went through). The "
    "{brain} and {tissue} contours of the reference T1w should fit the after image; hover over "
    "the figure to hold one.")


def _caption(text: str) -> str:
    return text.format(brain=V.outline_text("brain"), tissue=V.outline_text("tissue"))


def _vfa_registration_html(vstates, ref_img, ref_data, region, notes) -> str:
    """The VFA -> reference flicker (before/after registration) of every VFA state."""
    planes = list(enumerate(_registration_planes(region)))
    before, after = [], []
    for vs in vstates:
        label = _state_label(vs.session, vs.agent)
        try:
            b, a = Q.registration_pair(vs, ref_img, planes)
        except Exception as exc:  # noqa: BLE001 - a report must not fail on one image
            LOG.debug("VFA registration check of %s skipped", label, exc_info=True)
            notes.append(f"VFA registration check of {label} skipped: its VFA image or "
                         f"transform could not be read ({type(exc).__name__})")
            continue
        before.append((label, b))
        after.append((label, a))
    if not after:
        return ('<p class="empty">No VFA set with its registration transform was found (the '
                "plan names the VFA images).</p>")
    first = _registration_figure(ref_img, ref_data, after, region, tag="after")
    second = _registration_figure(ref_img, ref_data, before, region, tag="before")
    return H.flicker_html(first, second, "image/png", _caption(_VFA_CAPTION),
                          alt=("VFA images after registration", "VFA images before registration"))


def _registration_section(output_dir, participant, plan, bids_dir, ref_path, ref_img, brain,
                          notes) -> tuple:
    moving, ref_data, vfa = [], None, ""
    if ref_path is not None:
        ref_data = _data3d(ref_img)
        region = _registration_region(ref_data, brain)
        moving = _session_t1ws(output_dir, participant, plan, bids_dir, ref_path, ref_img,
                               _registration_planes(region), notes)
        vfa = _vfa_registration_html(Q.vfa_states(output_dir, participant, plan), ref_img,
                                     ref_data, region, notes)
    if moving:
        png = _registration_figure(ref_img, ref_data, moving, region)
        body = H.image_html(png, "image/png", _caption(_T1W_CAPTION), css_class="figure mosaic")
    else:
        body = ('<p class="empty">No session T1w could be brought into the reference space '
                '(no T1w in space-T1w and no transform with its source T1w).</p>')
    if vfa:
        body = f"<h3>Session T1w \u2192 reference</h3>{body}<h3>VFA \u2192 T1w</h3>{vfa}"
    return ("registration", "Registration", H.section(
        "registration", "Registration checks", body,
        "Every session is brought rigidly into the baseline pre-contrast T1w before any "
        "voxelwise difference is taken."))


_FIT_NOTE = (
    "B1+: the factor on the nominal flip angle the fit used (the TB1map times its scale, or the "
    "factor computed from a B1 method's images), drawn where it was measured. VFA residual: "
    "root-mean-square difference between the VFA signals and the SPGR signal of the written M0 "
    "and T1 maps with that B1+, in % of the mean signal over the flip angles; computed for this "
    "view on the slices shown (no residual map is written). At tissue edges the resampled maps "
    "mix neighbouring voxels, so a rim of higher residual is expected there. Colour ranges: "
    "{ranges}.")


def _fit_rows(vstates, plan, output_dir, participant, maps, ref_img, planes, notes):
    """(B1 rows, residual rows) of the fit-quality mosaics, each ``(label, data, agent)``."""
    b1_rows, res_rows = [], []
    for vs in vstates:
        label = _state_label(vs.session, vs.agent)

        def map_of(key):
            m = next((m for m in maps if (m.session, m.agent) == (vs.session, vs.agent)
                      and m.key == key), None)
            return None if m is None else _on_grid(_load(m.path), ref_img)
        try:
            b1 = Q.b1_on_planes(vs, output_dir, participant, ref_img, planes)
            m0, t1 = map_of("M0map"), map_of("T1map")
            res = None if m0 is None or t1 is None else Q.residual_on_planes(
                vs, plan, m0, t1, b1, ref_img, planes)
        except Exception as exc:  # noqa: BLE001 - a report must not fail on one image
            LOG.debug("fit-quality view of %s skipped", label, exc_info=True)
            notes.append(f"VFA fit-quality view of {label} skipped: its VFA images, B1 map or "
                         f"maps could not be read ({type(exc).__name__})")
            continue
        b1_rows.append((label, b1, vs.agent))
        res_rows.append((label, res, vs.agent))
    return b1_rows, res_rows


def _fit_section(output_dir, participant, plan, maps, ref_img, labels, n_slices, notes):
    vstates = Q.vfa_states(output_dir, participant, plan)
    if ref_img is None or not vstates:
        body = ('<p class="empty">No VFA set with its registration transform was found (the '
                "plan names the VFA images; the report needs it).</p>")
        return ("fit", "VFA fit", H.section("fit", "VFA fit quality", body))
    anat = _data3d(ref_img)
    slices = _choose_slices(anat.shape, labels[0], n_slices, labels[1])
    b1_rows, res_rows = _fit_rows(vstates, plan, output_dir, participant, maps, ref_img,
                                  [(2, z) for z in slices], notes)
    crop = _crop_box(anat, labels[2])
    canvas, shown = (crop(anat), tuple(crop(a) for a in labels)), []
    parts = []
    for key, rows, caption in (("b1", b1_rows, "B1+ factor of the VFA fit"),
                               ("vfa_residual", res_rows, "VFA fit residual")):
        if not rows or all(d is None for _, d, _ in rows):
            continue
        shown.append(key)
        styled = [(lab, crop(d), _mosaic_style(key, ag, None, None, None)) for lab, d, ag in rows]
        png = _maps_figure(V.QUANTITIES[key].title, styled, canvas[0], canvas[1], slices,
                           _aspect(ref_img), V.plane_labels(ref_img.affine, "axial"))
        parts.append(f"<h3>{H.esc(caption)}</h3>" + H.image_html(
            png, "image/png", "", alt=caption, css_class="figure mosaic"))
    if not parts:
        body = '<p class="empty">No B1+ map was used and no residual could be computed.</p>'
    else:
        body = "".join(parts) + '<p class="note">' + H.esc(_FIT_NOTE.format(
            ranges="; ".join(V.range_text(k) for k in shown))) + "</p>"
    return ("fit", "VFA fit", H.section(
        "fit", "VFA fit quality", body,
        "Where the T1 maps come from: the flip-angle correction and how well the SPGR model "
        "explains the VFA signals."))


def _quantitative_section(maps, ref_img, labels, plan, n_slices) -> tuple:
    lesions, controls, brain = labels
    if ref_img is not None:
        anat = _data3d(ref_img)
        slices = _choose_slices(anat.shape, lesions, n_slices, controls)
        body = _maps_section(maps, ref_img, anat, labels, slices, plan)
    else:
        body = '<p class="empty">No maps were found in the outputs.</p>'
    return ("maps", "Maps", H.section(
        "maps", "Quantitative maps", body, "All maps are in the reference space."))


def _software_section(output_dir: Path, maps, notes) -> tuple:
    files = [m.path.relative_to(output_dir).as_posix() for m in maps]
    body = (H.versions_html(_versions(output_dir))
            + f"<details><summary>Outputs shown ({len(files)} files)</summary><p>"
            + "<br>".join(f"<code>{H.esc(f)}</code>" for f in files) + "</p></details>"
            + "".join(f'<p class="note">{H.esc(n)}</p>' for n in notes))
    return ("software", "Software", H.section("software", "Software", body))


#: the 3D view's quantities: output-registry key of the map -> lesion-table column drawn
THREE_D_COLUMNS = {"enhancement": "se_mean_percent", "concentration": "conc_mean_mM"}


def _three_d_section(maps, lesion_tsv: Path, plan) -> tuple:
    """Glass brain with every lesion coloured by its table value, per post-contrast state (the
    paper's Fig. 1 row 4 and Fig. 4), one figure per quantity and agent (one colour scale)."""
    def first(key):
        return next((m.path for m in maps if m.key == key), None)
    dseg, brain = first("lesion_dseg"), first("brain_mask")
    post = [st for st in _map_states(maps, plan) if st[1]]
    if dseg is None or not lesion_tsv.is_file() or not post:
        body = '<p class="empty">No lesion mask, lesion table or post-contrast state.</p>'
        return ("view3d", "3D", H.section("view3d", "Lesions in 3D", body))
    _, rows = _read_lesion_table(lesion_tsv)
    brain_surface, lesions = R3.surfaces_of(brain, dseg)
    agents = list(dict.fromkeys(canonical_agent(a) or a for _, a in post))
    figures = []
    for key, column in THREE_D_COLUMNS.items():
        values = R3.state_values(rows, column)
        q = V.QUANTITIES[key]
        for agent in agents:
            states = [(ses, a) for ses, a in post if (canonical_agent(a) or a) == agent]
            scale = V.scale_for(key, agent)
            fig = R3.lesion_figure(
                brain_surface, lesions,
                [(_state_label(ses, a), values.get((ses, agent), {})) for ses, a in states],
                cmap=scale.cmap, vmin=scale.vmin, vmax=scale.vmax,
                quantity=f"{q.title} ({scale.unit})")
            title = f"{q.title} per lesion, {agent}"
            figures.append(f"<h3>{H.esc(title)}</h3>" + H.image_html(
                _png(fig), "image/png", "", alt=title, css_class="figure view3d"))
    note = ('<p class="note">The brain mask\'s surface (grey, transparent) and every lesion of '
            "the lesion mask (surfaces by marching cubes, in world coordinates), seen from the "
            "left, the right and above; each lesion is coloured by its mean in the lesion "
            "table (SE, [Gd]) on the colour scale of the maps section. White: no value for "
            "that state.</p>")
    return ("view3d", "3D", H.section("view3d", "Lesions in 3D", "".join(figures) + note,
                                      f"{len(lesions)} lesion(s)."))


def _methods_section(output_dir: Path) -> tuple:
    """The methods text of the run (logs/CITATION.md, written by the participant level)."""
    path = output_dir / CITATION_FILE
    if not path.is_file():
        body = '<p class="empty">No methods text was written for this run.</p>'
    else:
        text = path.read_text(encoding="utf-8")
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        html = []
        for para in paragraphs:
            if para.startswith("# "):
                continue
            if para.startswith("## "):
                html.append(f"<h3>{H.esc(para[3:])}</h3>")
            elif para.startswith("1. "):
                html.append("<ol>" + "".join(f"<li>{H.esc(line.split('. ', 1)[1])}</li>"
                                            for line in para.splitlines()) + "</ol>")
            else:
                html.append(f"<p>{H.esc(para)}</p>")
        body = "".join(html) + (f'<p class="note">Also in <code>{CITATION_FILE}</code> and '
                                f"<code>{Path(CITATION_FILE).with_suffix('.bib')}</code>.</p>")
    return ("methods", "Methods", H.section("methods", "Methods", body,
                                            "Generated from the run; may be cited as is."))


def _resources_section(output_dir: Path, participant: str):
    """Node run time and peak memory (``--resource-monitor``); no section without the table."""
    rows = RS.read_resources(output_dir, participant)
    if rows is None:
        return None
    cols = list(C.columns(C.RESOURCES_TABLE))
    name = RS.resources_path(output_dir, participant).relative_to(output_dir)
    body = (H.table_html(cols, rows, C.headers(C.RESOURCES_TABLE), css_class="data fit")
            + f'<p class="note">File: <code>{H.esc(name)}</code>.</p>')
    return ("resources", "Resources", H.section(
        "resources", "Node resources", body,
        "Wall time, peak memory and peak CPU of every pipeline node (--resource-monitor)."))


#: the figure sections handed to worker processes (fork: they inherit this list, nothing large
#: is pickled); each entry is (function, arguments, whether it takes the notes list last)
_FIGURE_TASKS: list = []


def _figure_task(index: int) -> tuple:
    """Run :data:`_FIGURE_TASKS` ``[index]``; (its section, the notes it added)."""
    func, args, takes_notes = _FIGURE_TASKS[index]
    notes: list[str] = []
    return (func(*args, notes) if takes_notes else func(*args)), notes


def _figure_sections(tasks: list, nprocs: int) -> list[tuple]:
    """Each task's (section, notes), in the order given: one after the other with ``nprocs``
    1, else in up to ``nprocs`` forked processes (the figures are matplotlib drawing, which one
    process does on one core). Where fork is unavailable or a worker dies, in this process."""
    _FIGURE_TASKS[:] = tasks
    try:
        workers = min(int(nprocs), len(tasks))
        if workers > 1 and "fork" in mp.get_all_start_methods():
            try:
                with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                    return list(pool.map(_figure_task, range(len(tasks))))
            except Exception as exc:  # noqa: BLE001 - a worker died (memory): draw them here
                LOG.warning("report figures in parallel failed (%s: %s); drawing them one "
                            "after the other", type(exc).__name__, exc)
        return [_figure_task(i) for i in range(len(tasks))]
    finally:
        _FIGURE_TASKS.clear()


def build_participant_report(output_dir: Path | str, participant: str, plan=None, *,
                             bids_dir: Path | str | None = None,
                             warnings: Sequence[str] = (), n_slices: int = 3,
                             nprocs: int = 1) -> Path:
    """Write ``OUTPUT_DIR/sub-<participant>.html`` from the participant's derivatives.

    ``participant`` is the label with or without ``sub-``. ``plan`` (a
    :class:`~bids_agquant.bids.plan.ParticipantPlan`) adds the plan section; ``warnings`` are
    shown with the plan's warnings and the WARNING lines of the participant's log files.
    ``nprocs`` > 1 draws the figure sections in that many processes. Returns the path of the
    report.
    """
    output_dir = Path(output_dir)
    participant = participant[4:] if participant.startswith("sub-") else participant
    bids_dir = Path(bids_dir) if bids_dir else None
    maps = find_maps(output_dir, participant)
    log_errors, log_warnings = _log_messages(output_dir, participant)
    roots = [output_dir, bids_dir]

    def lines(messages):
        return list(dict.fromkeys(m for m in (H.readable(x, roots) for x in messages) if m))
    all_warnings = lines([*(getattr(plan, "warnings", ()) or ()), *warnings, *log_warnings])
    all_errors = lines(log_errors)
    notes = []
    ref_path, ref_img = _display_grid(plan, bids_dir, maps, notes)
    labels = _label_images(maps, ref_img)
    lesion_tsv = output_dir / D.participant_path("lesion_table", participant)
    drawn = _figure_sections([
        (_registration_section, (output_dir, participant, plan, bids_dir, ref_path, ref_img,
                                 labels[2]), True),
        (_quantitative_section, (maps, ref_img, labels, plan, n_slices), False),
        (_three_d_section, (maps, lesion_tsv, plan), False),
        (_fit_section, (output_dir, participant, plan, maps, ref_img, labels, n_slices), True),
    ], nprocs)
    for _, added in drawn:
        notes.extend(added)
    registration, quantitative, three_d, fit = (section for section, _ in drawn)
    sections = [
        _summary_section(maps, lesion_tsv, all_errors, all_warnings,
                         _n_qa_flags(output_dir, participant)),
        ("plan", "Plan", H.section("plan", "Plan that was run", _plan_html(plan, bids_dir),
                                   "Which images were used for each session and contrast "
                                   "state.")),
        registration, quantitative, three_d, fit,
        _qa_section(output_dir, participant),
        ("lesions", "Lesions", H.section("lesions", "Lesion table",
                                         _lesion_table_html(lesion_tsv))),
        _methods_section(output_dir),
        _resources_section(output_dir, participant),
        _software_section(output_dir, maps, lines(notes)),  # last: the notes of the others
    ]
    sections = [sec for sec in sections if sec is not None]
    text = H.page(f"sub-{participant}", "Participant report &middot; AGuIX quantification",
                  sections)
    return write_text_atomic(output_dir / f"sub-{participant}.html", text)
