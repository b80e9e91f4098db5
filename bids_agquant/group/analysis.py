"""Group level, analysis: every cohort table, fit and test from the typed lesion rows.

Statistics, thresholds and the detection-limit formulas are in :mod:`bids_agquant.qmri.cohort`;
this module puts rows together (session roles, covariates) and makes one table per output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_agquant.bids import columns, tables
from bids_agquant.group.load import order_sessions, warn as _warn
from bids_agquant.qmri import cohort
from bids_agquant.qmri.concentration import (percent_injected_dose_per_gram,
                                             se_upper_bound_concentration)

__all__ = ["Table", "GroupAnalysis", "analyse_cohort", "STUDY_AGENT", "REFERENCE_AGENT",
           "CONTROL_SE_THRESHOLD_PERCENT", "CONTROL_CONC_THRESHOLD_MM"]

STUDY_AGENT = cohort.STUDY_AGENT
REFERENCE_AGENT = cohort.REFERENCE_AGENT
CONTROL_SE_THRESHOLD_PERCENT = cohort.CONTROL_SE_THRESHOLD_PERCENT
CONTROL_CONC_THRESHOLD_MM = cohort.CONTROL_CONC_THRESHOLD_MM
_NAN = float("nan")
_natural_key = tables.natural_key
_strip = tables.strip_prefix


@dataclass
class Table:
    """One output table: ``name`` is the file stem under ``group/``."""
    name: str
    title: str
    description: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)

    def column(self, name: str) -> list:
        return [r.get(name) for r in self.rows]

    @classmethod
    def registered(cls, name: str, title: str, description: str, rows: list[dict]) -> "Table":
        """A table whose columns, in order, are those of the column registry
        (``data/columns.tsv``): the one home of every group table's columns."""
        return cls(name, title, description, list(columns.columns(name)), rows)


@dataclass
class GroupAnalysis:
    """Everything the group level computed (tables, fits for the figures, warnings)."""
    tables: dict[str, Table]
    warnings: list[str]
    session_roles: dict[str, dict]          # participant -> {"order": [...], "source": ..., ...}
    fits: dict[str, object]                 # name -> LinearFit / dict of LinearFit
    tests: dict[str, cohort.GroupTest]
    n_participants: int
    summary: dict


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _fit_row(fit: cohort.LinearFit) -> dict:
    return {k: getattr(fit, k) for k in ("n", "slope", "slope_ci_low", "slope_ci_high",
                                         "intercept", "intercept_ci_low", "intercept_ci_high",
                                         "r2", "p_value")}


def _sub(p: str) -> str:
    return f"sub-{p}"


def _ses(s: str) -> str:
    return f"ses-{s}"


def _mean_sd(values) -> tuple[float, float]:
    s = cohort.summarise(values)
    return s.mean, s.sd


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------
def analyse_cohort(rows: list[dict], covariates: dict[str, dict], bids_dir: Path | None = None,
                   warnings: list[str] | None = None) -> GroupAnalysis:
    """All group statistics from typed lesion rows (see :func:`read_lesion_table`)."""
    warnings = [] if warnings is None else warnings
    participants = sorted({r["participant"] for r in rows}, key=_natural_key)
    missing_cov = [p for p in participants if p not in covariates]
    if covariates and missing_cov:
        _warn(warnings, f"participants.tsv has no row for {', '.join(map(_sub, missing_cov))}: "
                        f"their covariate statistics are skipped")
    c = _Cohort(rows, participants, covariates, bids_dir, warnings)
    for step in (_session_roles, _covariate_warnings, _derived_quantities, _select_lesions,
                 _dose_response, _by_tumour_and_size, _aguix_vs_dotarem, _se_vs_concentration,
                 _upper_bounds, _percent_id_per_g, _persistence, _controls, _cohort_table):
        step(c)
    summary = _summary(c.tables, c.fits, c.tests, c.roles, warnings, participants)
    return GroupAnalysis(tables=c.tables, warnings=warnings, session_roles=c.roles, fits=c.fits,
                         tests=c.tests, n_participants=len(participants), summary=summary)


@dataclass
class _Cohort:
    """What the steps of :func:`analyse_cohort` share: the typed rows (annotated in place), the
    selections made from them and the tables, fits and tests made so far."""
    rows: list[dict]
    participants: list[str]
    covariates: dict[str, dict]
    bids_dir: Path | None
    warnings: list[str]
    roles: dict[str, dict] = field(default_factory=dict)
    dose_known: bool = False
    tumor_known: bool = False
    study_rows: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    measurable: list[dict] = field(default_factory=list)
    peak: list[dict] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    fits: dict[str, object] = field(default_factory=dict)
    tests: dict[str, cohort.GroupTest] = field(default_factory=dict)


def _session_roles(c: _Cohort) -> None:
    """Covariates, session order and session role on every row; the roles per participant."""
    rows, participants, warnings = c.rows, c.participants, c.warnings
    bids_dir, covariates = c.bids_dir, c.covariates
    roles: dict[str, dict] = {}
    by_label = []
    for p in participants:
        mine = [r for r in rows if r["participant"] == p]
        order, source = order_sessions(p, (r["session"] for r in mine), bids_dir)
        if source != "sessions.tsv acq_time" and len(order) > 1:
            by_label.append(f"{_sub(p)} ({' < '.join(order)})")
        by_agent: dict[str, list[str]] = {}
        for s in order:
            for agent in sorted({r["agent"] for r in mine if r["session"] == s and r["agent"]}):
                by_agent.setdefault(agent, []).append(s)
        roles[p] = {"order": order, "source": source, "sessions_by_agent": by_agent}
        cov = covariates.get(p, {})
        for r in mine:
            r["dose_mg_per_kg"] = cov.get("dose_mg_per_kg", _NAN)
            r["weight_kg"] = cov.get("weight_kg", _NAN)
            r["primary_tumor"] = cov.get("primary_tumor")
            r["session_order"] = order.index(r["session"]) + 1
            r["session_order_source"] = source
            idx = by_agent.get(r["agent"], []).index(r["session"]) + 1 if r["agent"] else None
            r["agent_session_index"] = idx
            if r["agent"] == STUDY_AGENT:
                r["session_role"] = "peak" if idx == 1 else "persistence"
            elif r["agent"] == REFERENCE_AGENT and idx == 1:
                r["session_role"] = "reference"
            else:
                r["session_role"] = "other"
            r["size_bin"] = cohort.size_bin(r["longest_diameter_mm"])
    if by_label:
        _warn(warnings, f"no acq_time for every session in sub-<p>_sessions.tsv: sessions "
                        f"ordered by label for {', '.join(by_label)}; check that this is the "
                        f"order in time")
    c.roles = roles


def _covariate_warnings(c: _Cohort) -> None:
    """What the covariates allow, with a warning for each statistic they do not."""
    rows, warnings = c.rows, c.warnings
    dose_known = any(_finite(r["dose_mg_per_kg"]) for r in rows)
    weight_known = any(_finite(r["weight_kg"]) for r in rows)
    tumor_known = any(r["primary_tumor"] for r in rows)
    study_rows = [r for r in rows if r["agent"] == STUDY_AGENT]
    if not study_rows:
        _warn(warnings, f"no {STUDY_AGENT} rows in the lesion tables: dose response, "
                        f"concentration and persistence statistics are skipped")
    if not dose_known:
        _warn(warnings, "dose_mg_per_kg unknown for every participant: dose response, dose "
                        "normalisation, sensitivity per dose and %ID/g are skipped")
    elif any(not _finite(r["dose_mg_per_kg"]) for r in study_rows):
        miss = sorted({r["participant"] for r in study_rows if not _finite(r["dose_mg_per_kg"])})
        _warn(warnings, f"dose_mg_per_kg missing for {', '.join(map(_sub, miss))}: left out of "
                        f"the dose statistics")
    if not weight_known:
        _warn(warnings, "weight_kg unknown for every participant: %ID/g is skipped")
    if not tumor_known:
        _warn(warnings, "primary_tumor unknown for every participant: statistics by primary "
                        "tumour are skipped")
    c.dose_known, c.tumor_known, c.study_rows = dose_known, tumor_known, study_rows


def _derived_quantities(c: _Cohort) -> None:
    """Dose-normalised SE, %ID/g and the detection limit on every row."""
    rows = c.rows
    # dose normalisation and %ID/g (study agent only)
    for r in rows:
        is_study = r["agent"] == STUDY_AGENT
        r["se_dose_normalised_percent"] = (
            float(cohort.dose_normalised_se(r["se_mean_percent"], r["dose_mg_per_kg"]))
            if is_study else _NAN)
        r["percent_id_per_g"] = (
            float(percent_injected_dose_per_gram(r["conc_mean_mg_per_L"], r["dose_mg_per_kg"],
                                                 r["weight_kg"]))
            if is_study and not r["is_control"] and _finite(r["conc_mean_mg_per_L"])
            and _finite(r["dose_mg_per_kg"]) and _finite(r["weight_kg"]) else _NAN)

    # detection limits per participant x session x agent
    for key in {(r["participant"], r["session"], r["agent"]) for r in rows if r["agent"]}:
        group = [r for r in rows if (r["participant"], r["session"], r["agent"]) == key]
        controls = [r["conc_mean_mM"] for r in group if r["is_control"]]
        lod_controls = cohort.detection_limit(controls)
        for r in group:
            lod = lod_controls
            if not _finite(lod) and not r["is_control"]:
                lod = cohort.detection_limit_of_mean(r["conc_sd_mM"], r["n_voxels"])
            r["detection_limit_mM"] = lod
            r["conc_quantified"] = bool(_finite(r["conc_mean_mM"]) and _finite(lod)
                                        and r["conc_mean_mM"] > lod)


def _select_lesions(c: _Cohort) -> None:
    """Lesions, measurable lesions and the peak-session lesions with an SE."""
    rows, warnings, study_rows = c.rows, c.warnings, c.study_rows
    lesions = [r for r in rows if not r["is_control"]]
    measurable = [r for r in lesions if r["measurable"]]
    peak = [r for r in measurable if r["session_role"] == "peak"
            and _finite(r["se_mean_percent"])]
    if study_rows and not peak:
        _warn(warnings, f"no measurable lesion (>= 10 mm) with a {STUDY_AGENT} SE: cohort "
                        f"statistics on lesions are empty")
    c.lesions, c.measurable, c.peak = lesions, measurable, peak


def _dose_response(c: _Cohort) -> None:
    """Per-dose SE and the dose-response regressions (paper Fig. 2A)."""
    warnings, dose_known, study_rows, peak = c.warnings, c.dose_known, c.study_rows, c.peak
    fits, tables = c.fits, c.tables
    dosed = [r for r in peak if _finite(r["dose_mg_per_kg"])]
    doses = sorted({r["dose_mg_per_kg"] for r in dosed})
    by_dose_rows = []
    for d in doses:
        sel = [r for r in dosed if r["dose_mg_per_kg"] == d]
        s = cohort.summarise([r["se_mean_percent"] for r in sel])
        by_dose_rows.append({"dose_mg_per_kg": d,
                             "n_participants": len({r["participant"] for r in sel}),
                             "n_lesions": s.n, "mean": s.mean, "sd": s.sd, "median": s.median,
                             "min": s.minimum, "max": s.maximum})
    tables["dose_response_by_dose"] = Table.registered(
        "dose_response_by_dose", "Signal enhancement per AGuIX dose",
        "Mean and SD of the peak-session SE over measurable lesions (>= 10 mm), per dose "
        "(paper Fig. 2A).",
        by_dose_rows)
    reg_rows = []
    if len(doses) >= 2:
        fit_means = cohort.linear_regression([r["dose_mg_per_kg"] for r in by_dose_rows],
                                             [r["mean"] for r in by_dose_rows])
        fit_all = cohort.linear_regression([r["dose_mg_per_kg"] for r in dosed],
                                           [r["se_mean_percent"] for r in dosed])
        fits["dose_means"], fits["dose_all"] = fit_means, fit_all
        if len(doses) < 3:
            _warn(warnings, f"only {len(doses)} AGuIX doses: the line through the per-dose means "
                            f"has no confidence interval (R2 = 1 by construction); see the "
                            f"regression of all lesion SEs on dose")
        reg_rows = [dict(model="mean SE per dose on dose", x="dose (mg/kg)", y="mean SE (%)",
                         **_fit_row(fit_means)),
                    dict(model="lesion SE on dose", x="dose (mg/kg)", y="SE (%)",
                         **_fit_row(fit_all))]
    elif dose_known and study_rows:
        _warn(warnings, "fewer than two AGuIX doses with measurable lesions: no dose-response "
                        "regression")
    tables["dose_response_regression"] = Table.registered(
        "dose_response_regression", "Dose response: regressions of SE on dose",
        "Ordinary least squares with 95 % confidence intervals (t distribution, n-2 dof); "
        "slope in % per mg/kg.", reg_rows)


def _by_tumour_and_size(c: _Cohort) -> None:
    """Dose-normalised SE by primary tumour and size bin, and the tests between groups."""
    warnings, tumor_known, peak, tests = c.warnings, c.tumor_known, c.peak, c.tests
    tables = c.tables
    norm = [r for r in peak if _finite(r["se_dose_normalised_percent"])]
    grp_rows, test_rows = [], []
    factors = []
    if tumor_known:
        factors.append(("primary_tumor", None))
    if norm:
        factors.append(("size_bin", [cohort.size_bin(lo) for lo, _ in cohort.SIZE_BINS_MM]
                        + [cohort.OTHER_SIZE_BIN]))
    for factor, order in factors:
        sel = [r for r in norm if r[factor]]
        values = [r["se_dose_normalised_percent"] for r in sel]
        labels = [r[factor] for r in sel]
        summaries = cohort.summarise_groups(values, labels, order)
        for s in summaries:
            if s.n or factor != "size_bin" or s.group != cohort.OTHER_SIZE_BIN:
                grp_rows.append({"factor": factor, "group": s.group, "n": s.n, "mean": s.mean,
                                 "sd": s.sd, "median": s.median, "min": s.minimum,
                                 "max": s.maximum})
        tested = [(v, lab) for v, lab in zip(values, labels) if lab != cohort.OTHER_SIZE_BIN]
        t = cohort.group_difference_test(values=[v for v, _ in tested],
                                         labels=[lab for _, lab in tested], test="kruskal")
        tests[factor] = t
        test_rows.append(dict(factor=factor, **t.as_dict()))
    if peak and tumor_known and not norm:
        _warn(warnings, "no dose-normalised SE (dose missing): primary tumour and size "
                        "statistics skipped")
    tables["se_normalised_by_group"] = Table.registered(
        "se_normalised_by_group", "Dose-normalised SE by primary tumour and size",
        "SE * 100 / dose over measurable lesions at the peak AGuIX session (paper Fig. 2B/C).",
        grp_rows)
    tables["group_tests"] = Table.registered(
        "group_tests", "Tests for differences between groups",
        "Kruskal-Wallis H test on the dose-normalised SE (small, skewed groups; no normality "
        "assumption). Size bins outside 10-50 mm are not tested.",
        test_rows)


def _aguix_vs_dotarem(c: _Cohort) -> None:
    """Peak AGuIX SE against the reference Dotarem SE of the same lesions; sensitivity."""
    warnings, study_rows, measurable, peak = c.warnings, c.study_rows, c.measurable, c.peak
    fits, tables = c.fits, c.tables
    ref_by_lesion = {(r["participant"], r["lesion_id"]): r for r in measurable
                     if r["session_role"] == "reference" and _finite(r["se_mean_percent"])}
    pairs = [(r, ref_by_lesion[(r["participant"], r["lesion_id"])]) for r in peak
             if (r["participant"], r["lesion_id"]) in ref_by_lesion]
    if study_rows and not ref_by_lesion:
        _warn(warnings, f"no {REFERENCE_AGENT} session with measurable lesions: AGuIX versus "
                        f"Dotarem statistics are skipped")
    cmp_rows = []
    cmp_fits: dict[str, cohort.LinearFit] = {}
    if pairs:
        paired_doses = sorted({a["dose_mg_per_kg"] for a, _ in pairs
                               if _finite(a["dose_mg_per_kg"])})
        if paired_doses:
            scope_dose = paired_doses[-1]
            scoped = [(a, d) for a, d in pairs if a["dose_mg_per_kg"] == scope_dose]
            scope_label = f"{scope_dose:g}"
        else:
            scoped, scope_label = pairs, "all"
        groups = {"all": scoped}
        for a, d in scoped:
            if a["primary_tumor"]:
                groups.setdefault(a["primary_tumor"], []).append((a, d))
        for name in ["all"] + sorted(g for g in groups if g != "all"):
            g = groups[name]
            fit = cohort.linear_regression([d["se_mean_percent"] for _, d in g],
                                           [a["se_mean_percent"] for a, _ in g])
            cmp_fits[name] = fit
            cmp_rows.append(dict(dose_or_scope=scope_label, primary_tumor=name,
                                 x="Dotarem SE (%)", y="AGuIX SE (%)", **_fit_row(fit)))
        fits["aguix_vs_dotarem"] = cmp_fits
        fits["aguix_vs_dotarem_scope"] = scope_label
    tables["aguix_vs_dotarem"] = Table.registered(
        "aguix_vs_dotarem", "AGuIX versus Dotarem, lesion by lesion",
        "Regression of the peak AGuIX SE on the reference Dotarem SE of the same measurable "
        "lesions, per primary tumour, at the highest dose (paper Fig. 3A: 100 mg/kg, the same Gd "
        "quantity as one Dotarem dose).",
        cmp_rows)
    sens_rows = []
    for d in sorted({a["dose_mg_per_kg"] for a, _ in pairs if _finite(a["dose_mg_per_kg"])}):
        sel = [(a, b) for a, b in pairs if a["dose_mg_per_kg"] == d]
        ma = float(np.mean([a["se_mean_percent"] for a, _ in sel]))
        md = float(np.mean([b["se_mean_percent"] for _, b in sel]))
        per = cohort.sensitivity_percent([a["se_mean_percent"] for a, _ in sel],
                                         [b["se_mean_percent"] for _, b in sel])
        sens_rows.append({"dose_mg_per_kg": d, "n_lesions": len(sel),
                          "se_aguix_mean_percent": ma, "se_dotarem_mean_percent": md,
                          "sensitivity_percent": float(cohort.sensitivity_percent(ma, md)),
                          "sensitivity_median_lesion_percent":
                              float(np.nanmedian(per)) if np.isfinite(per).any() else _NAN})
    tables["sensitivity_by_dose"] = Table.registered(
        "sensitivity_by_dose", "Sensitivity of AGuIX relative to Dotarem",
        "100 x mean AGuIX SE / mean Dotarem SE over the measurable lesions seen in both, per dose.",
        sens_rows)


def _se_vs_concentration(c: _Cohort) -> None:
    """Per-participant regression of lesion SE on concentration (paper Fig. 3B)."""
    participants, peak, fits, tables = c.participants, c.peak, c.fits, c.tables
    conc_rows = []
    conc_fits: dict[str, cohort.LinearFit] = {}
    for p in participants:
        sel = [r for r in peak if r["participant"] == p and _finite(r["conc_mean_mg_per_L"])]
        if not sel:
            continue
        fit = cohort.linear_regression([r["conc_mean_mg_per_L"] for r in sel],
                                       [r["se_mean_percent"] for r in sel])
        conc_fits[p] = fit
        m, sd = _mean_sd([r["conc_mean_mg_per_L"] for r in sel])
        conc_rows.append(dict(participant_id=_sub(p), session_id=_ses(sel[0]["session"]),
                              dose_mg_per_kg=sel[0]["dose_mg_per_kg"],
                              primary_tumor=sel[0]["primary_tumor"],
                              conc_mean_mg_per_L_mean=m, conc_mean_mg_per_L_sd=sd,
                              **_fit_row(fit)))
    fits["se_vs_concentration"] = conc_fits
    tables["se_vs_concentration"] = Table.registered(
        "se_vs_concentration", "SE versus concentration, per participant",
        "Regression of the lesion SE (%) on the lesion AGuIX concentration (mg/L) over the "
        "measurable lesions of the peak session (paper Fig. 3B); slope in % per mg/L.",
        conc_rows)


def _upper_bounds(c: _Cohort) -> None:
    """SE-based upper bounds of the concentration where it is not quantified (on the rows)."""
    rows = c.rows
    conc_fits = c.fits.get("se_vs_concentration", {})
    for r in rows:
        r["conc_upper_mg_per_L"] = _NAN
        r["conc_upper_conservative_mg_per_L"] = _NAN
        fit = conc_fits.get(r["participant"])
        if (r["session_role"] == "persistence" and not r["is_control"]
                and not r["conc_quantified"] and fit is not None
                and _finite(r["se_mean_percent"])):
            se_pos = max(r["se_mean_percent"], 0.0)      # no enhancement -> bound 0
            if _finite(fit.slope) and fit.slope > 0:
                r["conc_upper_mg_per_L"] = float(se_upper_bound_concentration(se_pos, fit.slope))
            if _finite(fit.slope_ci_low) and fit.slope_ci_low > 0:
                r["conc_upper_conservative_mg_per_L"] = float(
                    se_upper_bound_concentration(se_pos, fit.slope_ci_low))


def _percent_id_per_g(c: _Cohort) -> None:
    """Uptake in percent of the injected dose per gram."""
    lesions, tables = c.lesions, c.tables
    idg_rows = [dict(participant_id=_sub(r["participant"]), session_id=_ses(r["session"]),
                     lesion_id=r["lesion_id"], session_role=r["session_role"],
                     measurable=r["measurable"], dose_mg_per_kg=r["dose_mg_per_kg"],
                     weight_kg=r["weight_kg"], conc_mean_mg_per_L=r["conc_mean_mg_per_L"],
                     conc_quantified=r["conc_quantified"],
                     percent_id_per_g=r["percent_id_per_g"])
                for r in lesions if r["agent"] == STUDY_AGENT and _finite(r["percent_id_per_g"])]
    tables["percent_id_per_g"] = Table.registered(
        "percent_id_per_g", "Uptake: percent of injected dose per gram",
        "%ID/g = 100 * (C mg/L / 1000) / (dose mg/kg * weight kg), tissue density 1 kg/L, for "
        "every AGuIX lesion row with a concentration.",
        idg_rows)


def _persistence(c: _Cohort) -> None:
    """Later AGuIX sessions against the peak, per lesion and per participant."""
    measurable, peak, tables = c.measurable, c.peak, c.tables
    conc_fits = c.fits.get("se_vs_concentration", {})
    peak_by_lesion = {(r["participant"], r["lesion_id"]): r for r in peak}
    pers_rows = []
    for r in measurable:
        if r["session_role"] != "persistence" or not _finite(r["se_mean_percent"]):
            continue
        pk = peak_by_lesion.get((r["participant"], r["lesion_id"]))
        if pk is None:
            continue
        pers_rows.append(dict(
            participant_id=_sub(r["participant"]), lesion_id=r["lesion_id"],
            peak_session=_ses(pk["session"]), later_session=_ses(r["session"]),
            dose_mg_per_kg=r["dose_mg_per_kg"], se_peak_percent=pk["se_mean_percent"],
            se_later_percent=r["se_mean_percent"],
            persistence_percent=float(cohort.persistence_percent(r["se_mean_percent"],
                                                                 pk["se_mean_percent"])),
            conc_peak_mg_per_L=pk["conc_mean_mg_per_L"],
            conc_later_mg_per_L=r["conc_mean_mg_per_L"] if r["conc_quantified"] else _NAN,
            detection_limit_mM=r["detection_limit_mM"], conc_quantified=r["conc_quantified"],
            conc_upper_mg_per_L=r["conc_upper_mg_per_L"],
            conc_upper_conservative_mg_per_L=r["conc_upper_conservative_mg_per_L"]))
    tables["persistence"] = Table.registered(
        "persistence", "Persistence at later AGuIX sessions, per lesion",
        "SE at each later AGuIX session (trial D8) against the peak session (D1), and the "
        "concentration or, where it cannot be quantified, its SE-based upper bound.",
        pers_rows)
    pp_rows = []
    for key in sorted({(r["participant_id"], r["later_session"]) for r in pers_rows},
                      key=lambda k: (_natural_key(k[0]), _natural_key(k[1]))):
        sel = [r for r in pers_rows if (r["participant_id"], r["later_session"]) == key]
        pm, psd = _mean_sd([r["se_peak_percent"] for r in sel])
        lm, lsd = _mean_sd([r["se_later_percent"] for r in sel])
        fit = conc_fits.get(_strip(key[0], "sub-"))
        slope = fit.slope if fit is not None else _NAN
        quantified = [r for r in sel if r["conc_quantified"]]
        unquantified = [r for r in sel if not r["conc_quantified"]]
        se_unq = (max(float(np.mean([r["se_later_percent"] for r in unquantified])), 0.0)
                  if unquantified else _NAN)
        upper = (float(se_upper_bound_concentration(se_unq, slope))
                 if _finite(slope) and slope > 0 and _finite(se_unq) else _NAN)
        conc_q = (float(np.mean([r["conc_later_mg_per_L"] for r in quantified]))
                  if quantified else _NAN)
        pp_rows.append(dict(participant_id=key[0], peak_session=sel[0]["peak_session"],
                            later_session=key[1], n_lesions=len(sel), se_peak_mean_percent=pm,
                            se_peak_sd_percent=psd, se_later_mean_percent=lm,
                            se_later_sd_percent=lsd,
                            persistence_percent=float(cohort.persistence_percent(lm, pm)),
                            n_quantified=len(quantified), conc_later_mean_mg_per_L=conc_q,
                            slope_percent_per_mg_per_L=slope, conc_upper_mg_per_L=upper))
    tables["persistence_by_participant"] = Table.registered(
        "persistence_by_participant", "Persistence per participant",
        "Mean lesion SE at the peak and later AGuIX sessions; the mean later concentration of "
        "the lesions where it is quantified and, for the others, the upper bound mean later SE "
        "over the participant's SE-versus-concentration slope (paper: about 10 uM at D8).",
        pp_rows)


def _controls(c: _Cohort) -> None:
    """Healthy-tissue control regions per participant, session and agent, with flags."""
    rows, roles, warnings, tables = c.rows, c.roles, c.warnings, c.tables
    ctl_rows = []
    keys = sorted({(r["participant"], r["session"], r["agent"]) for r in rows
                   if r["is_control"] and r["agent"]},
                  key=lambda k: (_natural_key(k[0]), roles[k[0]]["order"].index(k[1]), k[2]))
    for p, s, a in keys:
        sel = [r for r in rows if r["is_control"] and (r["participant"], r["session"], r["agent"])
               == (p, s, a)]
        se = np.array([r["se_mean_percent"] for r in sel], float)
        cc = np.array([r["conc_mean_mM"] for r in sel], float)
        dr = np.array([r["delta_r1_mean_per_s"] for r in sel], float)
        se_max = float(np.nanmax(np.abs(se))) if np.isfinite(se).any() else _NAN
        cc_max = float(np.nanmax(np.abs(cc))) if np.isfinite(cc).any() else _NAN
        flags = []
        if _finite(se_max) and se_max > CONTROL_SE_THRESHOLD_PERCENT:
            flags.append(f"|SE| > {CONTROL_SE_THRESHOLD_PERCENT:g} %")
        if _finite(cc_max) and cc_max > CONTROL_CONC_THRESHOLD_MM:
            flags.append(f"|conc| > {CONTROL_CONC_THRESHOLD_MM:g} mM")
        flag = "; ".join(flags) or "ok"
        if flags:
            _warn(warnings, f"{_sub(p)} {_ses(s)} {a}: healthy-tissue control regions show "
                            f"{flag} (max |SE| {se_max:.1f} %, max |conc| {cc_max:.4f} mM): check "
                            f"registration and the lesion mask")
        ctl_rows.append(dict(
            participant_id=_sub(p), session_id=_ses(s), contrast_agent=a,
            session_role=sel[0]["session_role"], n_controls=len(sel),
            se_control_mean_percent=float(np.nanmean(se)) if np.isfinite(se).any() else _NAN,
            se_control_max_abs_percent=se_max,
            conc_control_mean_mM=float(np.nanmean(cc)) if np.isfinite(cc).any() else _NAN,
            conc_control_max_abs_mM=cc_max,
            delta_r1_control_mean_per_s=float(np.nanmean(dr)) if np.isfinite(dr).any() else _NAN,
            detection_limit_mM=sel[0]["detection_limit_mM"], flag=flag))
    if rows and not ctl_rows:
        _warn(warnings, "no healthy-tissue control rows (control-<k>) in the lesion tables")
    tables["controls"] = Table.registered(
        "controls", "Healthy-tissue controls",
        f"Control regions should show no SE and no concentration; flagged when |SE| > "
        f"{CONTROL_SE_THRESHOLD_PERCENT:g} % or |conc| > {CONTROL_CONC_THRESHOLD_MM:g} mM.",
        ctl_rows)


def _cohort_table(c: _Cohort) -> None:
    """Every row with covariates, roles and derived quantities (first table, for readers)."""
    rows, tables = c.rows, c.tables
    cohort_cols = ["participant_id", "session_id", "contrast_agent", "lesion_id", "is_control",
                   "longest_diameter_mm", "measurable", "volume_mm3", "se_mean_percent",
                   "se_sd_percent", "t1_pre_mean_s", "t1_post_mean_s", "delta_r1_mean_per_s",
                   "conc_mean_mM", "conc_sd_mM", "conc_mean_mg_per_L", "n_voxels",
                   "dose_mg_per_kg", "weight_kg", "primary_tumor", "session_order",
                   "session_order_source", "agent_session_index", "session_role", "size_bin",
                   "se_dose_normalised_percent", "percent_id_per_g", "detection_limit_mM",
                   "conc_quantified", "conc_upper_mg_per_L", "conc_upper_conservative_mg_per_L"]
    ordered = sorted(rows, key=lambda r: (_natural_key(r["participant"]), r["session_order"],
                                          r["agent"] or "", r["is_control"],
                                          _natural_key(r["lesion_id"])))
    cohort_rows = []
    for r in ordered:
        out = {c: r.get(c) for c in cohort_cols}
        out.update(participant_id=_sub(r["participant"]), session_id=_ses(r["session"]),
                   contrast_agent=r["agent"] or r["agent_label"])
        cohort_rows.append(out)
    cohort_table = Table(
        "cohort_lesions", "Cohort lesion table",
        "Every row of every participant lesion table, with covariates, session roles and the "
        "derived quantities of the group level.", cohort_cols, cohort_rows)
    c.tables = {"cohort_lesions": cohort_table, **tables}


_clean = tables.json_safe


def _summary(out_tables, fits, tests, roles, warnings, participants) -> dict:
    out = {
        "participants": [_sub(p) for p in participants],
        "n_participants": len(participants),
        "n_measurable_lesions_peak": int(sum(
            1 for r in out_tables["cohort_lesions"].rows if r["session_role"] == "peak"
            and r["measurable"] and not r["is_control"])),
        "session_roles": {_sub(p): {"order": [_ses(s) for s in v["order"]],
                                    "ordered_by": v["source"],
                                    "sessions_by_agent": {a: [_ses(s) for s in ss] for a, ss
                                                          in v["sessions_by_agent"].items()}}
                          for p, v in roles.items()},
        "dose_response": {k: fits[f].as_dict() for k, f in
                          (("mean_se_on_dose", "dose_means"), ("lesion_se_on_dose", "dose_all"))
                          if f in fits},
        "group_tests": {k: t.as_dict() for k, t in tests.items()},
        "thresholds": {"control_se_percent": CONTROL_SE_THRESHOLD_PERCENT,
                       "control_conc_mM": CONTROL_CONC_THRESHOLD_MM,
                       "detection_limit_k": cohort.DETECTION_LIMIT_K,
                       "measurable_diameter_mm": cohort.MEASURABLE_DIAMETER_MM,
                       "size_bins_mm": [list(b) for b in cohort.SIZE_BINS_MM]},
        "agents": {"study": STUDY_AGENT, "reference": REFERENCE_AGENT},
        "warnings": list(warnings),
        "software": tables.software_versions(),
    }
    return _clean(out)
