"""The group report ``OUTPUT_DIR/group/report.html``: key numbers, figures, tables, warnings."""
from __future__ import annotations

import math
from pathlib import Path

from bids_agquant.bids import columns as C
from bids_agquant.qmri import cohort
from bids_agquant.reports import html as H
from bids_agquant.reports._io import write_text_atomic
from bids_agquant.reports.figures import dose_band, factor_test_label

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


def _headline(analysis, key: str, view: str = "mixed"):
    return (analysis.fits.get("headlines", {}).get(key) or {}).get(view)


def _ci(row) -> str:
    return f"95 % CI {_f(row.ci_low)} to {_f(row.ci_high)}"


def _dose_card(analysis) -> tuple[str, str, str]:
    """The mixed-model dose slope with its CI, beside the lesion-level one."""
    m, naive = _headline(analysis, "dose_mg_per_kg"), _headline(analysis, "dose_mg_per_kg",
                                                                 "lesion")
    if m is None:
        return ("dose-response slope", "n/a", "needs doses")
    if not m.testable:
        value, note = m.status, m.reason
    else:
        value = f"{_f(m.estimate)} {m.unit}"
        note = (f"mixed model, {_ci(m)}, {m.n_participants} participants, {m.n_lesions} "
                f"lesions" + ("; singular fit: participant-clustered CI" if m.singular else ""))
    if naive is not None and naive.testable:
        note += (f"; lesion-level OLS (ignores clustering) {_f(naive.estimate)}, "
                 f"{_ci(naive)}")
    return ("dose-response slope", value, note)


def _factor_card(analysis, key: str, label: str, needs: str) -> tuple[str, str, str]:
    """A factor's test as the design supports it: the mixed-model p-value, or why there is
    none."""
    m = _headline(analysis, key)
    if m is None:
        return (label, "n/a", needs)
    if not m.testable:
        return (label, m.status, m.reason)
    what = "Wald F, all levels" if m.term == "all levels equal" else f"Wald t, {m.term}"
    note = f"mixed model, {what}, {m.n_participants} participants"
    if m.singular:
        note += "; singular fit: participant-clustered standard errors (see the table)"
    elif m.note:
        note += f" ({m.note})"
    p = _p(m.p_value)
    return (label, f"p {p}" if p.startswith("<") else f"p = {p}", note)


def _key_cards(analysis) -> list[tuple[str, str, str]]:
    """The overview cards: participants, dose-response slope, group tests, healthy controls."""
    t = analysis.tables
    n_peak = analysis.summary.get("n_measurable_lesions_peak", 0)
    flagged = [r for r in t["controls"].rows if r["flag"] != "ok"]
    cards = [
        ("participants", str(analysis.n_participants), f"{n_peak} measurable lesions at peak"),
        _dose_card(analysis),
        _factor_card(analysis, "primary_tumor", "tumour types differ?", "needs primary_tumor"),
        _factor_card(analysis, "size_bin", "size bins differ?", "needs dose"),
        ("healthy controls",
         "n/a" if not t["controls"].rows else ("all ok" if not flagged
                                               else f"{len(flagged)} flagged"),
         f"{len(t['controls'].rows)} participant-sessions checked" if t["controls"].rows
         else "no control regions in the lesion tables"),
    ]
    return cards


_MIXED_COLS = ["model", "term", "method", "status", "estimate", "unit", "ci_low", "ci_high",
               "p_value", "n_lesions", "n_participants", "note"]


def _mixed_table(analysis, models: tuple[str, ...]) -> str:
    rows = [r for r in analysis.tables["mixed_models"].rows if r["model"] in models]
    return H.table_html(_MIXED_COLS, rows, _HEAD("mixed_models"),
                        highlight=lambda r: "flag" if r["status"] not in ("ok",) else None)


def _dose_caption(analysis) -> str:
    """The dose figure's caption says the band only when the figure draws it."""
    by_dose = analysis.tables["dose_response_by_dose"].rows
    top = max((r["dose_mg_per_kg"] for r in by_dose), default=0.0)
    band = dose_band(analysis, [0.0, top]) is not None
    line = ("the line is the least-squares fit of the means with its 95 % confidence band"
            if band else "the line is the least-squares fit of the means (no confidence band: "
            "fewer than three doses)")
    return ("Each dot is one measurable lesion at the peak AGuIX session (coloured by primary "
            f"tumour); squares are mean \u00b1 SD per dose; {line} (paper Fig. 2A).")


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

    body = (_fig(figures, "dose_response", _dose_caption(analysis))
            + "<h3>Lesions nested in participants</h3>"
            + _mixed_table(analysis, ("dose response",))
            + '<p class="note">The mixed model (random intercept per participant) is the '
              "primary view; the lesion-level OLS below it treats the lesions of one "
              "participant as independent and so overstates the precision of a "
              "participant-level effect such as dose.</p>"
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
            + "<h3>Mixed models: lesions nested in participants</h3>"
            + _mixed_table(analysis, ("primary tumour", "size bin"))
            + '<p class="note">Tumour type is a property of the participant: with one '
              "participant per type it cannot be told apart from the participant, and no "
              "p-value is given. Size varies within participants.</p>"
            + "<h3>Lesion-level rank tests (ignore clustering)</h3>"
            + H.table_html(["factor", "test", "statistic", "p_value", "n_groups", "n", "groups",
                            "note"], t["group_tests"].rows, _HEAD("group_tests"))
            + '<p class="note">Kruskal\u2013Wallis H test as in the paper: a rank test that '
              "assumes neither normality nor equal variances, but treats the lesions of one "
              "participant as independent; secondary to the mixed models above.</p>")
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
                            "persistence_percent", "n_detected", "n_quantified",
                            "conc_later_mean_mg_per_L", "conc_later_weighted_mean_mg_per_L",
                            "slope_percent_per_mg_per_L", "conc_upper_mg_per_L"],
                           t["persistence_by_participant"].rows,
                           _HEAD("persistence_by_participant"))
            + '<p class="note">Detected = mean concentration above its critical level; not '
              "quantified = n/a or below its limit of quantification (the lesion's own noise and "
              "the session's control regions, <code>docs/uncertainty.md</code>; tables of older "
              f"versions: not above {cohort.DETECTION_LIMIT_K:g} \u00d7 the RMS of the "
              "control-region concentrations of that session); the bound is SE / slope of "
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


def _section_sites(analysis, figures: dict, group_dir: Path) -> tuple[str, str, str]:
    """The report's ``sites`` section: QA by site and scanner, flagged sessions."""
    t = analysis.tables
    site_rows = t["qa_by_site"].rows if "qa_by_site" in t else []
    flagged = {}
    for r in t["cohort_lesions"].rows:
        if r.get("session_qa_flagged") in (True,):
            flagged[(r["participant_id"], r["session_id"])] = r.get("session_qa_flags")
    excluded = analysis.summary.get("qa_excluded_sessions") or []
    body = H.table_html(["site", "manufacturer", "manufacturers_model_name",
                         "magnetic_field_strength_t", "n_participants", "n_sessions",
                         "n_sessions_with_qa", "n_sessions_flagged", "flagged_metrics",
                         "nawm_t1_median_s", "nawm_t1_relative_to_field", "snr_t1w_median",
                         "registration_ncc_median", "vfa_systematic_residual_median"], site_rows, _HEAD("qa_by_site"),
                        highlight=lambda r: "flag" if r.get("n_sessions_flagged") else None)
    if flagged:
        body += ("<p>Sessions with a QA flag (kept in the statistics unless "
                 "<code>--exclude-qa-flagged</code>):</p><ul>"
                 + "".join(f"<li>{H.esc(p)} {H.esc(s)}: {H.esc(f or '')}</li>"
                           for (p, s), f in flagged.items()) + "</ul>")
    if excluded:
        body += ("<p><b>Left out of every statistic</b> (<code>--exclude-qa-flagged</code>): "
                 + H.esc(", ".join(excluded)) + "</p>")
    body += ('<p class="note">Site from participants.tsv (<code>site</code>), scanner from the '
             "T1 map sidecars, QA from the participant QA tables (<code>docs/qa.md</code>); "
             "every cohort row carries them (<code>cohort_lesions.tsv</code>).</p>")
    return ("sites", "Sites and QA", H.section(
        "sites", "Sites and QA", body,
        "Per site and scanner: sessions, QA-flagged sessions and median QA metrics."))


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
             _section_sites, _section_software)


def build_group_report(analysis, group_dir: Path, figures: dict) -> Path:
    """Write ``group_dir/report.html`` (self-contained) and return its path."""
    sections = [section(analysis, figures, group_dir) for section in _SECTIONS]
    n_peak = analysis.summary.get("n_measurable_lesions_peak", 0)
    text = H.page("Group report",
                  f"{analysis.n_participants} participants &middot; {n_peak} measurable lesions",
                  sections)
    return write_text_atomic(Path(group_dir) / "report.html", text)
