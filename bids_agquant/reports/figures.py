"""Group figures in the spirit of the paper's Fig. 2 and 3 (matplotlib, Agg backend).

Each ``fig_*`` function takes a :class:`~bids_agquant.group.analysis.GroupAnalysis` and returns a
matplotlib Figure, or None when the data it needs are missing. :func:`write_group_figures` saves
every figure as SVG and PNG under ``group/`` (atomically) and returns their paths.
"""
from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bids_agquant.qmri import cohort  # noqa: E402
from bids_agquant.reports import palette  # noqa: E402
from bids_agquant.reports._io import write_bytes_atomic  # noqa: E402

__all__ = ["write_group_figures", "tumor_colour", "STYLE", "figure_bytes", "FIGURES", "dose_band",
           "factor_test_label"]

#: One look for every figure of the project.
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.edgecolor": "#6b7280",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "svg.fonttype": "path",        # self-contained SVG (no font needed to view it)
    "svg.hashsalt": "bids_agquant",  # reproducible SVG ids
}

tumor_colour = palette.tumor_colour
_NEUTRAL = palette.GREY
_ACCENT = palette.BLACK


def dose_band(analysis, x) -> tuple[np.ndarray, np.ndarray] | None:
    """The 95 % confidence band of the line through the per-dose means at ``x``, or None when
    it cannot be drawn (fewer than three doses): the dose figure and its caption both ask."""
    fit = analysis.fits.get("dose_means")
    if fit is None or not _finite(fit.slope):
        return None
    lo, hi = fit.confidence_band(x)
    return (lo, hi) if np.isfinite(lo).all() and np.isfinite(hi).all() else None


def factor_test_label(analysis, factor: str) -> str:
    """What the group figures and report say about a factor's test: the mixed model's p-value,
    or why there is none (never a p-value the design does not support)."""
    row = (analysis.fits.get("headlines", {}).get(factor) or {}).get("mixed")
    if row is None:
        return "no test"
    if not row.testable:
        return textwrap.fill(f"{row.status}: {row.reason}", width=60)
    return f"mixed model p = {row.p_value:.2g}" + (" (singular fit)" if row.singular else "")


def _new(figsize=(6.4, 4.4)) -> tuple[Figure, plt.Axes]:
    with plt.rc_context(STYLE):
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _jitter(n: int, width: float, seed: int = 0) -> np.ndarray:
    if n <= 1:
        return np.zeros(n)
    return np.random.default_rng(seed).uniform(-width, width, n)


def _eq(fit, xname="x", digits=2) -> str:
    if not _finite(fit.slope):
        return ""
    sign = "+" if fit.intercept >= 0 else "\u2212"
    # through two points R2 is 1 by construction: not shown as if it were evidence
    r2 = f", R\u00b2 = {fit.r2:.2f}" if _finite(fit.r2) and fit.n >= 3 else ""
    return f"y = {fit.slope:.{digits}f}{xname} {sign} {abs(fit.intercept):.1f}{r2}"


def _peak_measurable(analysis) -> list[dict]:
    return [r for r in analysis.tables["cohort_lesions"].rows
            if r["session_role"] == "peak" and r["measurable"] and not r["is_control"]
            and _finite(r["se_mean_percent"])]


def _tumors(rows) -> list[str]:
    return sorted({r["primary_tumor"] for r in rows if r.get("primary_tumor")})


# ------------------------------------------------------------------------------------------
def fig_dose_response(analysis) -> Figure | None:
    """Fig. 2A: lesion SE against dose, mean +/- SD per dose and the regression on the means."""
    rows = [r for r in _peak_measurable(analysis) if _finite(r["dose_mg_per_kg"])]
    by_dose = analysis.tables["dose_response_by_dose"].rows
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, ax = _new((8.4, 4.6))
        tumors = _tumors(rows)
        doses = np.array([r["dose_mg_per_kg"] for r in rows])
        span = max(float(np.ptp(doses)), 10.0)
        x = doses + _jitter(len(rows), 0.012 * span, seed=1)
        colours = [tumor_colour(r["primary_tumor"], tumors) for r in rows]
        ses = np.array([r["se_mean_percent"] for r in rows])
        ax.scatter(x, ses, s=24, c=colours, alpha=0.6, linewidths=0, zorder=2,
                   label="lesion" if not tumors else None)
        d = np.array([r["dose_mg_per_kg"] for r in by_dose], float)
        m = np.array([r["mean"] for r in by_dose], float)
        sd = np.array([r["sd"] for r in by_dose], float)
        ax.errorbar(d, m, yerr=np.where(np.isfinite(sd), sd, 0), fmt="s", ms=6, color=_ACCENT,
                    ecolor=_ACCENT, elinewidth=1.2, capsize=4, zorder=3, label="mean \u00b1 SD")
        fit = analysis.fits.get("dose_means")
        if fit is not None and _finite(fit.slope):
            xx = np.linspace(0, d.max() * 1.05, 100)
            band = dose_band(analysis, xx)
            if band is not None:
                ax.fill_between(xx, *band, color=palette.FIT_BAND, alpha=0.45, linewidth=0,
                                label="95 % CI of the line", zorder=1)
            ax.plot(xx, fit.predict(xx), color=palette.FIT, lw=1.8, zorder=2,
                    label="regression on the means")
            ax.text(0.03, 0.96, _eq(fit), transform=ax.transAxes, va="top", fontsize=10,
                    color=palette.FIT, fontweight="bold")
        for t in tumors:
            ax.scatter([], [], s=24, c=tumor_colour(t, tumors), label=f"lesion, {t}")
        ax.set_xlabel("AGuIX dose (mg/kg body weight)")
        ax.set_ylabel("signal enhancement (%)")
        ax.set_title("Dose response (measurable lesions, peak session)")
        ax.set_xlim(0, d.max() * 1.08)
        top = np.nanmax(np.r_[ses, m + np.nan_to_num(sd)])
        ax.set_ylim(min(0.0, float(np.nanmin(ses)) * 1.1), top * 1.12)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)
    return fig


def fig_se_by_tumor(analysis) -> Figure | None:
    """Fig. 2B: dose-normalised SE by primary tumour (points, mean +/- SD), test p-value."""
    rows = [r for r in _peak_measurable(analysis) if r.get("primary_tumor")
            and _finite(r["se_dose_normalised_percent"])]
    if not rows:
        return None
    tumors = _tumors(rows)
    with plt.rc_context(STYLE):
        fig, ax = _new((6.0, 4.4))
        for i, t in enumerate(tumors):
            v = np.array([r["se_dose_normalised_percent"] for r in rows if r["primary_tumor"] == t])
            c = tumor_colour(t, tumors)
            ax.scatter(i + _jitter(v.size, 0.12, seed=i), v, s=24, color=c, alpha=0.6,
                       linewidths=0, zorder=2)
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            ax.errorbar(i + 0.3, v.mean(), yerr=sd, fmt="o", color=c, ms=7, capsize=4,
                        elinewidth=1.4, zorder=3)
        counts = [sum(1 for r in rows if r["primary_tumor"] == t) for t in tumors]
        ax.set_xticks(range(len(tumors)), [f"{t}\nn = {n}" for t, n in zip(tumors, counts)])
        ax.set_xlim(-0.6, len(tumors) - 0.2)
        ax.set_ylabel("SE normalised to 100 mg/kg (%)")
        ax.set_title(f"By primary tumour\n{factor_test_label(analysis, 'primary_tumor')}",
                     fontsize=10)
    return fig


def fig_se_vs_diameter(analysis) -> Figure | None:
    """Fig. 2C: dose-normalised SE against longest diameter, with the size bins."""
    rows = [r for r in _peak_measurable(analysis) if _finite(r["se_dose_normalised_percent"])
            and _finite(r["longest_diameter_mm"])]
    if not rows:
        return None
    tumors = _tumors(rows)
    with plt.rc_context(STYLE):
        fig, ax = _new()
        for (lo, hi), shade in zip(cohort.SIZE_BINS_MM, ("#f3f4f6", "#e5e5e5")):
            ax.axvspan(lo, hi, color=shade, zorder=0)
            sel = [r["se_dose_normalised_percent"] for r in rows
                   if cohort.size_bin(r["longest_diameter_mm"]) == cohort.size_bin(lo)]
            if sel:
                mean = float(np.mean(sel))
                ax.plot([lo, hi], [mean, mean], color=_ACCENT, lw=1.2, ls="--", zorder=1)
                label = f"{lo:g}\u2013{hi:g} mm: mean {mean:.0f} % (n={len(sel)})"
                ax.text((lo + hi) / 2, 1.0, label,
                        transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        fontsize=8, color=_ACCENT)
        groups = tumors or [None]
        for t in groups:
            sel = [r for r in rows if r.get("primary_tumor") == t] if t else rows
            ax.scatter([r["longest_diameter_mm"] for r in sel],
                       [r["se_dose_normalised_percent"] for r in sel], s=26,
                       color=tumor_colour(t, tumors), alpha=0.75, linewidths=0,
                       label=t or "lesion", zorder=2)
        ax.set_xlabel("longest diameter (mm)")
        ax.set_ylabel("SE normalised to 100 mg/kg (%)")
        ax.set_title(f"By lesion size\n{factor_test_label(analysis, 'size_bin')}", pad=18,
                     fontsize=10)
        ax.set_xlim(left=min(8.0, min(r["longest_diameter_mm"] for r in rows) - 2))
        ax.legend(loc="upper right", fontsize=8)
    return fig


def fig_aguix_vs_dotarem(analysis) -> Figure | None:
    """Fig. 3A: AGuIX SE against Dotarem SE of the same lesion, one line per primary tumour."""
    fits = analysis.fits.get("aguix_vs_dotarem")
    if not fits:
        return None
    scope = analysis.fits.get("aguix_vs_dotarem_scope", "all")
    rows = analysis.tables["cohort_lesions"].rows
    ref = {(r["participant_id"], r["lesion_id"]): r["se_mean_percent"] for r in rows
           if r["session_role"] == "reference" and r["measurable"] and not r["is_control"]}
    pts = [(ref[(r["participant_id"], r["lesion_id"])], r["se_mean_percent"], r["primary_tumor"])
           for r in _peak_measurable(analysis)
           if (r["participant_id"], r["lesion_id"]) in ref and _finite(ref[(r["participant_id"],
                                                                             r["lesion_id"])])
           and (scope == "all" or r["dose_mg_per_kg"] == float(scope))]
    if not pts:
        return None
    tumors = sorted({t for *_, t in pts if t})
    with plt.rc_context(STYLE):
        fig, ax = _new()
        xs = np.array([p[0] for p in pts])
        top = max(xs.max(), max(p[1] for p in pts)) * 1.08
        ax.plot([0, top], [0, top], color=palette.GREY, lw=1, ls=":", label="identity", zorder=1)
        for t in tumors or [None]:
            sel = [p for p in pts if p[2] == t] if t else pts
            c = tumor_colour(t, tumors)
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=30, color=c, alpha=0.8,
                       linewidths=0, zorder=3)
            fit = fits.get(t) if t else fits.get("all")
            label = t or "all"
            if fit is not None and _finite(fit.slope) and fit.n >= 2:
                xx = np.linspace(min(p[0] for p in sel), max(p[0] for p in sel), 20)
                ax.plot(xx, fit.predict(xx), color=c, lw=1.6, zorder=2)
                label = f"{label}: {_eq(fit)}"
            ax.scatter([], [], s=30, color=c, label=label)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("SE after Dotarem (%)")
        ax.set_ylabel("SE after AGuIX (%)")
        dose = f"{scope} mg/kg" if scope != "all" else "all doses"
        ax.set_title(f"AGuIX versus Dotarem, lesion by lesion ({dose})")
        ax.legend(loc="upper left", fontsize=8)
    return fig


def fig_sensitivity(analysis) -> Figure | None:
    """Sensitivity of AGuIX relative to Dotarem per dose (bars)."""
    rows = [r for r in analysis.tables["sensitivity_by_dose"].rows
            if _finite(r["sensitivity_percent"])]
    if not rows:
        return None
    with plt.rc_context(STYLE):
        fig, ax = _new((5.6, 3.8))
        labels = [f"{r['dose_mg_per_kg']:g}" for r in rows]
        vals = [r["sensitivity_percent"] for r in rows]
        bars = ax.bar(range(len(vals)), vals, color=palette.BAR, width=0.6, zorder=2)
        ax.set_xticks(range(len(vals)), labels)
        for b, v, r in zip(bars, vals, rows):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f} %\n(n={r['n_lesions']})",
                    ha="center", va="bottom", fontsize=8)
        ax.axhline(100, color=palette.GREY, lw=1, ls=":")
        ax.set_ylim(0, max(110, max(vals) * 1.25))
        ax.set_xlabel("AGuIX dose (mg/kg body weight)")
        ax.set_ylabel("AGuIX SE / Dotarem SE (%)")
        ax.set_title("Sensitivity relative to Dotarem")
    return fig


def fig_se_vs_concentration(analysis) -> Figure | None:
    """Fig. 3B: lesion SE against AGuIX concentration, one regression per participant."""
    fits = analysis.fits.get("se_vs_concentration") or {}
    rows = [r for r in _peak_measurable(analysis) if _finite(r["conc_mean_mg_per_L"])]
    if not rows:
        return None
    parts = sorted({r["participant_id"] for r in rows})
    styles = palette.participant_styles(parts)
    with plt.rc_context(STYLE):
        fig, ax = _new()
        for p in parts:
            sel = [r for r in rows if r["participant_id"] == p]
            x = np.array([r["conc_mean_mg_per_L"] for r in sel])
            y = np.array([r["se_mean_percent"] for r in sel])
            c, marker = styles[p]
            fit = fits.get(p.removeprefix("sub-"))
            label = p
            if fit is not None and _finite(fit.slope) and fit.n >= 2:
                xx = np.linspace(x.min(), x.max(), 20)
                ax.plot(xx, fit.predict(xx), color=c, lw=1.6)
                label = f"{p}: slope {fit.slope:.2f}" + (f", R\u00b2 {fit.r2:.2f}"
                                                         if _finite(fit.r2) else "")
            ax.scatter(x, y, s=28, color=c, marker=marker, alpha=0.8, linewidths=0, label=label,
                       zorder=3)
        ax.set_xlabel("AGuIX concentration (mg/L)")
        ax.set_ylabel("signal enhancement (%)")
        ax.set_title("SE versus concentration (peak session)")
        ax.legend(loc="upper left", fontsize=8, ncols=1 if len(parts) < 8 else 2)
    return fig


def fig_persistence(analysis) -> Figure | None:
    """SE of each measurable lesion at the peak and later AGuIX sessions (paired lines)."""
    rows = analysis.tables["persistence"].rows
    if not rows:
        return None
    parts = sorted({r["participant_id"] for r in rows})
    styles = palette.participant_styles(parts)
    with plt.rc_context(STYLE):
        fig, ax = _new((5.6, 4.4))
        for r in rows:
            c, marker = styles[r["participant_id"]]
            ax.plot([0, 1], [r["se_peak_percent"], r["se_later_percent"]], color=c, lw=1.2,
                    alpha=0.7, marker=marker, ms=4)
        for p in parts:
            ax.plot([], [], color=styles[p][0], marker=styles[p][1], ms=4, label=p)
        ax.set_xticks([0, 1], ["peak AGuIX session", "later AGuIX session"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylabel("signal enhancement (%)")
        ax.set_title("Persistence of enhancement")
        ax.legend(loc="upper right", fontsize=8, ncols=1 if len(parts) < 8 else 2)
    return fig


def fig_controls(analysis) -> Figure | None:
    """Healthy-tissue controls: largest |SE| and |concentration| per session, by session role."""
    rows = analysis.tables["controls"].rows
    if not rows:
        return None
    order = ["reference", "peak", "persistence", "other"]
    roles = [o for o in order if any(r["session_role"] == o for r in rows)]
    names = {"reference": "Dotarem\nreference", "peak": "AGuIX\npeak",
             "persistence": "AGuIX\nlater", "other": "other\nsessions"}
    with plt.rc_context(STYLE):
        fig = Figure(figsize=(8.4, 3.6), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, key, thr, unit, title in (
                (axes[0], "se_control_max_abs_percent", cohort.CONTROL_SE_THRESHOLD_PERCENT, "%",
                 "largest |SE| of a control region"),
                (axes[1], "conc_control_max_abs_mM", cohort.CONTROL_CONC_THRESHOLD_MM, "mM",
                 "largest |concentration| of a control region")):
            top = thr
            for i, role in enumerate(roles):
                sel = [r for r in rows if r["session_role"] == role and _finite(r[key])]
                v = np.array([r[key] for r in sel])
                if not v.size:
                    continue
                top = max(top, float(v.max()))
                xj = i + _jitter(v.size, 0.15, seed=i)
                bad = v > thr
                ax.scatter(xj[~bad], v[~bad], s=22, color=palette.OK, alpha=0.75, linewidths=0,
                           zorder=2)
                ax.scatter(xj[bad], v[bad], s=34, color=palette.FLAGGED, zorder=3)
                for x, y, r in zip(xj[bad], v[bad], np.array(sel, dtype=object)[bad]):
                    ax.annotate(r["participant_id"], (x, y), xytext=(5, 0),
                                textcoords="offset points", fontsize=8, color=palette.FLAGGED,
                                va="center")
            ax.axhline(thr, color=palette.FLAGGED, lw=1, ls="--")
            ax.text(1.0, thr, " threshold", transform=ax.get_yaxis_transform(), fontsize=8,
                    color=palette.FLAGGED, va="bottom", ha="right")
            ax.set_xticks(range(len(roles)), [names[r] for r in roles])
            ax.set_xlim(-0.6, len(roles) - 0.4)
            ax.set_ylim(0, top * 1.2)
            ax.set_ylabel(unit)
            ax.set_title(title, fontsize=10)
    return fig


#: Name -> builder; the name is the file stem ``figure_<name>``.
FIGURES = {
    "dose_response": fig_dose_response,
    "se_by_tumor": fig_se_by_tumor,
    "se_vs_diameter": fig_se_vs_diameter,
    "aguix_vs_dotarem": fig_aguix_vs_dotarem,
    "sensitivity": fig_sensitivity,
    "se_vs_concentration": fig_se_vs_concentration,
    "persistence": fig_persistence,
    "controls": fig_controls,
}


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.savefig(buf, format=fmt, facecolor="white",
                    metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def write_group_figures(analysis, group_dir: Path) -> dict[str, list[Path]]:
    """Build and save every figure that has data; returns ``{name: [svg, png]}``."""
    out = {}
    for name, build in FIGURES.items():
        fig = build(analysis)
        if fig is None:
            continue
        paths = []
        for fmt in ("svg", "png"):
            paths.append(write_bytes_atomic(Path(group_dir) / f"figure_{name}.{fmt}",
                                            figure_bytes(fig, fmt)))
        out[name] = paths
    return out
