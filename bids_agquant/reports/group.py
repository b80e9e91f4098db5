"""The group report ``OUTPUT_DIR/group/report.html``: key numbers, figures, tables, warnings."""
from __future__ import annotations

import math
from pathlib import Path

from bids_agquant.bids import columns as C
from bids_agquant.qmri import cohort
from bids_agquant.reports import html as H
from bids_agquant.reports._io import write_text_atomic

__all__ = ["build_group_report"]


def _f(v, d=2):
    return f"{v:.{d}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _p(v):
    if not (isinstance(v, (int, float)) and math.isfinite(v)):
        return "n/a"
    return f"{v:.2g}" if v >= 0.001 else "< 0.001"


def _fig(figures: dict, name: str, caption: str) -> str:
    paths = figures.get(name)
    if not paths:
        return ""
    svg = next((p for p in paths if p.suffix == ".svg"), None)
    if svg is not None:
        return H.image_html(svg.read_bytes(), "image/svg+xml", caption)
    png = paths[-1]
    return H.image_html(png.read_bytes(), "image/png", caption)


_FIT_COLS = ["n", "slope", "slope_ci_low", "slope_ci_high", "intercept", "r2", "p_value"]
#: Display headers of a group table's columns (the column registry, data/columns.tsv).
_HEAD = C.headers


def _key_cards(analysis) -> list[tuple[str, str, str]]:
    """The overview cards: participants, dose-response slope, group tests, healthy controls."""
    t = analysis.tables
    fm = analysis.fits.get("dose_means")
    n_peak = analysis.summary.get("n_measurable_lesions_peak", 0)
    flagged = [r for r in t["controls"].rows if r["flag"] != "ok"]
    tt = analysis.tests.get("primary_tumor")
    ts = analysis.tests.get("size_bin")
    cards = [
        ("participants", str(analysis.n_participants), f"{n_peak} measurable lesions at peak"),
        ("dose-response slope", f"{_f(fm.slope)} %/(mg/kg)" if fm else "n/a",
         (f"95 % CI {_f(fm.slope_ci_low)} to {_f(fm.slope_ci_high)}, R\u00b2 {_f(fm.r2)}"
          if math.isfinite(fm.slope_ci_low) else f"{fm.n} doses only: no CI")
         if fm else "needs doses"),
        ("tumour types differ?", f"p = {_p(tt.p_value)}" if tt else "n/a",
         f"{tt.test}, {tt.n_groups} groups" if tt else "needs primary_tumor"),
        ("size bins differ?", f"p = {_p(ts.p_value)}" if ts else "n/a",
         f"{ts.test}, 10-20 vs 20-50 mm" if ts else "needs dose"),
        ("healthy controls",
         "n/a" if not t["controls"].rows else ("all ok" if not flagged
                                               else f"{len(flagged)} flagged"),
         f"{len(t['controls'].rows)} participant-sessions checked" if t["controls"].rows
         else "no control regions in the lesion tables"),
    ]
    return cards


def _section_overview(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``overview`` section: (anchor, title, HTML)."""
    cards = _key_cards(analysis)
    return ("overview", "Overview", H.section(
        "overview", "Overview",
        H.cards_html(cards) + H.warnings_html(analysis.warnings),
        "Cohort statistics of the AGuIX trial from the participant lesion tables in this "
        "folder: dose response, primary tumour and size, comparison with Dotarem, "
        "concentration and persistence. Only measurable lesions (longest diameter "
        f"\u2265 {cohort.MEASURABLE_DIAMETER_MM:g} mm) enter the statistics; all lesions are in "
        "<code>cohort_lesions.tsv</code>."))


def _section_dose(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``dose`` section: (anchor, title, HTML)."""
    t = analysis.tables

    body = (_fig(figures, "dose_response",
                 "Each dot is one measurable lesion at the peak AGuIX session (coloured by "
                 "primary tumour); squares are mean \u00b1 SD per dose; the line is the "
                 "least-squares fit of the means with its 95 % confidence band (paper Fig. 2A).")
            + "<h3>Per dose</h3>"
            + H.table_html(t["dose_response_by_dose"].columns, t["dose_response_by_dose"].rows,
                           _HEAD("dose_response_by_dose"))
            + "<h3>Regressions</h3>"
            + H.table_html(["model"] + _FIT_COLS + ["intercept_ci_low", "intercept_ci_high"],
                           t["dose_response_regression"].rows,
                           _HEAD("dose_response_regression")))
    return ("dose", "Dose response", H.section(
        "dose", "Dose response", body,
        "Signal enhancement (SE) in measurable lesions two hours after AGuIX, against the "
        "injected dose."))


def _section_groups(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``groups`` section: (anchor, title, HTML)."""
    t = analysis.tables

    grp = t["se_normalised_by_group"].rows
    body = ('<div class="grid2">'
            + _fig(figures, "se_by_tumor", "Dose-normalised SE (SE \u00d7 100 / dose) by primary "
                   "tumour: dots are lesions, circles mean \u00b1 SD (paper Fig. 2B).")
            + _fig(figures, "se_vs_diameter", "Dose-normalised SE against the longest diameter; "
                   "dashed lines are the bin means (paper Fig. 2C).")
            + "</div>"
            + H.table_html(["factor", "group", "n", "mean", "sd", "median", "min", "max"], grp,
                           _HEAD("se_normalised_by_group"))
            + "<h3>Tests for a difference between groups</h3>"
            + H.table_html(["factor", "test", "statistic", "p_value", "n_groups", "n", "groups",
                            "note"], t["group_tests"].rows, _HEAD("group_tests"))
            + '<p class="note">Kruskal\u2013Wallis H test: groups are small and SE is skewed, '
              "so a rank test that assumes neither normality nor equal variances is used; "
              "lesions of one participant are treated as independent, as in the paper.</p>")
    return ("groups", "Tumour type and size", H.section(
        "groups", "Tumour type and size", body,
        "Does uptake depend on the primary tumour or on the size of the metastasis? "
        "SE is normalised to 100 mg/kg to remove the dose effect."))


def _section_dotarem(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``dotarem`` section: (anchor, title, HTML)."""
    t = analysis.tables

    body = ('<div class="grid2">'
            + _fig(figures, "aguix_vs_dotarem", "Peak AGuIX SE against the Dotarem SE of the "
                   "same lesion, per primary tumour, at the highest dose (paper Fig. 3A).")
            + _fig(figures, "sensitivity", "AGuIX sensitivity as a percentage of Dotarem's: "
                   "mean AGuIX SE / mean Dotarem SE over the same lesions.")
            + "</div>"
            + H.table_html(["dose_or_scope", "primary_tumor"] + _FIT_COLS,
                           t["aguix_vs_dotarem"].rows, _HEAD("aguix_vs_dotarem"))
            + H.table_html(t["sensitivity_by_dose"].columns, t["sensitivity_by_dose"].rows,
                           _HEAD("sensitivity_by_dose")))
    return ("dotarem", "AGuIX versus Dotarem", H.section(
        "dotarem", "AGuIX versus Dotarem", body,
        "Lesion-by-lesion comparison with the clinical agent given at the reference session."))


def _section_concentration(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``concentration`` section: (anchor, title, HTML)."""
    t = analysis.tables

    idg = [r for r in t["percent_id_per_g"].rows if r["measurable"]
           and r["session_role"] == "peak"]
    body = (_fig(figures, "se_vs_concentration", "Lesion SE against AGuIX concentration from "
                 "\u0394R1, one least-squares line per participant (paper Fig. 3B).")
            + H.table_html(["participant_id", "dose_mg_per_kg", "primary_tumor",
                            "conc_mean_mg_per_L_mean", "conc_mean_mg_per_L_sd"] + _FIT_COLS,
                           t["se_vs_concentration"].rows, _HEAD("se_vs_concentration"))
            + "<h3>Uptake (%ID/g), measurable lesions at the peak session</h3>"
            + H.table_html(["participant_id", "session_id", "lesion_id", "conc_mean_mg_per_L",
                            "dose_mg_per_kg", "weight_kg", "percent_id_per_g"], idg,
                           _HEAD("percent_id_per_g"),
                           formats={"percent_id_per_g": lambda v: H.fmt(v) if v is None
                                    else f"{v:.2e}"}))
    return ("concentration", "Concentration", H.section(
        "concentration", "Concentration", body,
        "SE versus concentration per participant; its slope also bounds the concentration "
        "where it cannot be quantified at later sessions."))


def _section_persistence(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``persistence`` section: (anchor, title, HTML)."""
    t = analysis.tables

    body = (_fig(figures, "persistence", "Each line is one measurable lesion: SE at the peak "
                 "(trial D1) and at a later AGuIX session (D8).")
            + H.table_html(["participant_id", "later_session", "n_lesions",
                            "se_peak_mean_percent", "se_later_mean_percent",
                            "persistence_percent", "n_quantified", "conc_later_mean_mg_per_L",
                            "slope_percent_per_mg_per_L", "conc_upper_mg_per_L"],
                           t["persistence_by_participant"].rows,
                           _HEAD("persistence_by_participant"))
            + '<p class="note">Not quantified = concentration n/a or not above '
              f"{cohort.DETECTION_LIMIT_K:g} \u00d7 the RMS "
              "of the control-region concentrations of that session; the bound is SE / slope of "
              "the participant's SE-versus-concentration regression (per lesion, also with the "
              "lower 95 % limit of the slope, in <code>persistence.tsv</code>).</p>")
    return ("persistence", "Persistence", H.section(
        "persistence", "Persistence", body,
        "Enhancement that remains at later sessions without a new injection."))


def _section_controls(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``controls`` section: (anchor, title, HTML)."""
    t = analysis.tables

    body = (_fig(figures, "controls", "Largest |mean| over the control regions of each session; "
                 "dashed lines are the flag thresholds.")
            + H.table_html(["participant_id", "session_id", "contrast_agent", "n_controls",
                            "se_control_mean_percent", "se_control_max_abs_percent",
                            "conc_control_mean_mM", "conc_control_max_abs_mM",
                            "delta_r1_control_mean_per_s", "flag"], t["controls"].rows,
                           _HEAD("controls"),
                           highlight=lambda r: "flag" if r["flag"] != "ok" else None))
    return ("controls", "Healthy controls", H.section(
        "controls", "Healthy-tissue controls", body,
        "Three metastasis-free regions per participant should show no enhancement and no "
        "concentration."))


def _section_sessions(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``sessions`` section: (anchor, title, HTML)."""
    t = analysis.tables
    def _who(p):
        report = Path(group_dir).parent / f"{p}.html"
        return (f'<a href="../{H.esc(p)}.html">{H.esc(p)}</a>' if report.is_file()
                else H.esc(p))
    role_rows = [{"participant": _who(p), "session order": " < ".join(v["order"]),
                  "ordered by": v["ordered_by"],
                  "sessions by agent": "; ".join(f"{a}: {', '.join(s)}" for a, s in
                                                 v["sessions_by_agent"].items())}
                 for p, v in analysis.summary.get("session_roles", {}).items()]
    measurable = [r for r in t["cohort_lesions"].rows if r["measurable"] and not r["is_control"]]
    body = (H.table_html(["participant", "session order", "ordered by", "sessions by agent"],
                         role_rows, raw=("participant",))
            + '<p class="note">The first AGuIX session is the peak, later AGuIX sessions are '
              "persistence, the first Dotarem session is the reference.</p>"
            + f"<details><summary>Measurable lesions ({len(measurable)} rows)</summary>"
            + H.table_html(["participant_id", "session_id", "contrast_agent", "session_role",
                            "lesion_id", "longest_diameter_mm", "se_mean_percent",
                            "se_dose_normalised_percent", "conc_mean_mg_per_L",
                            "conc_quantified", "primary_tumor", "dose_mg_per_kg"], measurable,
                           _HEAD("cohort_lesions"))
            + "</details>")
    return ("sessions", "Sessions and lesions", H.section(
        "sessions", "Sessions and lesions", body,
        "How each participant's sessions were ordered and which role each got; the participant "
        "links open the participant reports (sub-&lt;label&gt;.html beside group/)."))


def _section_software(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``software`` section: (anchor, title, HTML)."""
    files = sorted(p.name for p in Path(group_dir).iterdir() if p.suffix in (".tsv", ".json",
                                                                              ".svg", ".png"))
    body = ("<h3>Software</h3>" + H.versions_html(analysis.summary.get("software", {}))
            + "<h3>Files in this folder</h3><p>"
            + " ".join(f"<code>{H.esc(f)}</code>" for f in files) + "</p>")
    return ("software", "Software and files", H.section(
        "software", "Software and files", body))


#: The report's sections, in page order.
_SECTIONS = (_section_overview, _section_dose, _section_groups, _section_dotarem,
             _section_concentration, _section_persistence, _section_controls, _section_sessions,
             _section_software)


def build_group_report(analysis, group_dir: Path, figures: dict) -> Path:
    """Write ``group_dir/report.html`` (self-contained) and return its path."""
    sections = [section(analysis, figures, group_dir) for section in _SECTIONS]
    n_peak = analysis.summary.get("n_measurable_lesions_peak", 0)
    text = H.page("Group report",
                  f"{analysis.n_participants} participants &middot; {n_peak} measurable lesions",
                  sections)
    return write_text_atomic(Path(group_dir) / "report.html", text)
