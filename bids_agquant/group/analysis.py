"""Group level, analysis: every cohort table, fit and test from the typed lesion DataFrame.

Statistics, thresholds and the detection-limit formulas are in :mod:`bids_agquant.qmri.cohort`;
this module puts the rows together (covariates merged, session roles) and builds each output
table with one small function, by pandas selections, merges and group-bys.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bids_agquant.bids import columns, tables
from bids_agquant.bids.evidence import SOURCE_LABELS
import bids_agquant.group.mixed as mixed
from bids_agquant.group.load import as_text, order_sessions, warn as _warn
from bids_agquant.qmri import cohort
from bids_agquant.qmri.concentration import (percent_injected_dose_per_gram,
                                             se_upper_bound_concentration)

__all__ = ["Table", "GroupAnalysis", "analyse_cohort", "STUDY_AGENT", "REFERENCE_AGENT",
           "CONTROL_SE_THRESHOLD_PERCENT", "CONTROL_CONC_THRESHOLD_MM", "FACTOR_NAMES"]

STUDY_AGENT = cohort.STUDY_AGENT
REFERENCE_AGENT = cohort.REFERENCE_AGENT
CONTROL_SE_THRESHOLD_PERCENT = cohort.CONTROL_SE_THRESHOLD_PERCENT
CONTROL_CONC_THRESHOLD_MM = cohort.CONTROL_CONC_THRESHOLD_MM
_NAN = float("nan")
#: How the report and the notes name each grouping factor and its levels.
FACTOR_NAMES = {"primary_tumor": dict(factor_name="tumour type", level_name="type"),
                "size_bin": dict(factor_name="size bin", level_name="bin")}
_natural_key = tables.natural_key
_LESION = ["participant", "lesion_id"]
_SESSION = ["participant", "session", "agent"]


@dataclass
class Table:
    """One output table: ``name`` is the file stem under ``group/``; ``frame`` holds its data."""
    name: str
    title: str
    description: str
    columns: list[str]
    frame: pd.DataFrame

    @cached_property
    def rows(self) -> list[dict]:
        """The rows as dicts of Python values (missing: NaN in number columns, else None)."""
        out = self.frame.astype(object)
        for c in self.frame.columns:
            if not pd.api.types.is_float_dtype(self.frame[c]):
                out[c] = out[c].where(self.frame[c].notna(), None)
        return out.to_dict("records")

    @classmethod
    def registered(cls, name: str, title: str, description: str, data) -> "Table":
        """A table whose columns, in order, are those of the column registry
        (``data/columns.tsv``): the one home of every group table's columns. ``data``: a
        DataFrame (extra columns are dropped) or a list of dict rows."""
        cols = list(columns.columns(name))
        frame = (data.reindex(columns=cols) if isinstance(data, pd.DataFrame)
                 else pd.DataFrame(list(data), columns=cols))
        return cls(name, title, description, cols, frame.reset_index(drop=True))


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


def _isfinite(column: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(column.to_numpy(float)), index=column.index)


def _fit_row(fit: cohort.LinearFit) -> dict:
    return {k: getattr(fit, k) for k in ("n", "slope", "slope_ci_low", "slope_ci_high",
                                         "intercept", "intercept_ci_low", "intercept_ci_high",
                                         "r2", "p_value")}


def _sub(p: str) -> str:
    return f"sub-{p}"


def _ses(s: str) -> str:
    return f"ses-{s}"


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    s = cohort.summarise(values.to_numpy(float))
    return s.mean, s.sd


def _mean(values: pd.Series) -> float:
    return float(np.mean(values.to_numpy(float)))


def _summary_row(s: cohort.GroupSummary) -> dict:
    return {"mean": s.mean, "sd": s.sd, "median": s.median, "min": s.minimum, "max": s.maximum}


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------
def analyse_cohort(lesions: pd.DataFrame, covariates: pd.DataFrame,
                   bids_dir: Path | None = None, warnings: list[str] | None = None
                   ) -> GroupAnalysis:
    """All group statistics from the cohort's lesion rows and covariates
    (:func:`~bids_agquant.group.load.read_lesion_tables`,
    :func:`~bids_agquant.group.load.read_participants`)."""
    warnings = [] if warnings is None else warnings
    participants = sorted(set(lesions["participant"]), key=_natural_key)
    missing_cov = [p for p in participants if p not in covariates.index]
    if len(covariates) and missing_cov:
        _warn(warnings, f"participants.tsv has no row for {', '.join(map(_sub, missing_cov))}: "
                        f"their covariate statistics are skipped")
    rows = lesions.join(covariates, on="participant")
    rows["primary_tumor"] = as_text(rows["primary_tumor"])
    c = _Cohort(rows, participants, bids_dir, warnings)
    for step in (_session_roles, _covariate_warnings, _derived_quantities, _select_lesions,
                 _dose_response, _by_tumour_and_size, _mixed_models, _aguix_vs_dotarem,
                 _se_vs_concentration,
                 _upper_bounds, _percent_id_per_g, _persistence, _controls, _cohort_table):
        step(c)
    summary = _summary(c.tables, c.fits, c.tests, c.roles, warnings, participants)
    return GroupAnalysis(tables=c.tables, warnings=warnings, session_roles=c.roles, fits=c.fits,
                         tests=c.tests, n_participants=len(participants), summary=summary)


@dataclass
class _Cohort:
    """What the steps of :func:`analyse_cohort` share: the lesion rows with their covariates
    (columns added by the steps), the selections made from them and the tables, fits and tests
    made so far."""
    rows: pd.DataFrame
    participants: list[str]
    bids_dir: Path | None
    warnings: list[str]
    roles: dict[str, dict] = field(default_factory=dict)
    dose_known: bool = False
    tumor_known: bool = False
    has_study_rows: bool = False
    tables: dict[str, Table] = field(default_factory=dict)
    fits: dict[str, object] = field(default_factory=dict)
    tests: dict[str, cohort.GroupTest] = field(default_factory=dict)

    @property
    def lesions(self) -> pd.DataFrame:
        return self.rows[~self.rows["is_control"]]

    @property
    def measurable(self) -> pd.DataFrame:
        return self.rows[self.rows["measurable"]]          # measurable rows are never controls

    @property
    def peak(self) -> pd.DataFrame:
        """Measurable lesions of the peak session with an SE."""
        m = self.measurable
        return m[(m["session_role"] == "peak") & _isfinite(m["se_mean_percent"])]


def _ids(frame: pd.DataFrame, **renamed: str) -> pd.DataFrame:
    """``frame`` with ``participant_id`` and ``session_id`` (prefixed labels), and a prefixed
    copy of each ``renamed`` session column (``new=old``)."""
    out = frame.assign(participant_id="sub-" + frame["participant"],
                       session_id="ses-" + frame["session"])
    return out.assign(**{new: "ses-" + frame[old] for new, old in renamed.items()})


def _session_roles(c: _Cohort) -> None:
    """Session order and role on every row; the roles per participant: sessions in time order,
    how it was decided and the sessions of each agent (agents in the order they first appear)."""
    per_participant = dict(tuple(c.rows.groupby("participant", sort=False)))
    c.roles = {}
    for p in c.participants:
        rows = per_participant[p]
        order, source = order_sessions(p, rows["session"], c.bids_dir, rows)
        c.roles[p] = {"order": order, "source": source, "sessions_by_agent": {}}
    c.rows = c.rows.drop(columns=["session_order", "session_order_source"], errors="ignore")
    by_label = [f"{_sub(p)} ({' < '.join(r['order'])})" for p, r in c.roles.items()
                if SOURCE_LABELS in r["source"] and len(r["order"]) > 1]
    if by_label:
        _warn(c.warnings, f"no acquisition time for every session (sessions.tsv, scans.tsv or "
                          f"sidecars): sessions ordered by label for {', '.join(by_label)}; "
                          f"check that this is the order in time")
    order = pd.DataFrame([(p, s, i + 1, r["source"]) for p, r in c.roles.items()
                          for i, s in enumerate(r["order"])],
                         columns=["participant", "session", "session_order",
                                  "session_order_source"])
    rows = c.rows.merge(order, on=["participant", "session"], how="left")
    seen = (rows.loc[rows["agent"].notna(), ["participant", "session", "session_order", "agent"]]
            .drop_duplicates().sort_values(["session_order", "agent"], kind="stable"))
    seen["agent_session_index"] = seen.groupby(["participant", "agent"]).cumcount() + 1
    for p, s, a in zip(seen["participant"], seen["session"], seen["agent"]):
        c.roles[p]["sessions_by_agent"].setdefault(a, []).append(s)
    rows = rows.merge(seen.drop(columns="session_order"), on=["participant", "session", "agent"],
                      how="left")
    first, study = rows["agent_session_index"] == 1, rows["agent"] == STUDY_AGENT
    rows["session_role"] = np.select(
        [study & first, study, (rows["agent"] == REFERENCE_AGENT) & first],
        ["peak", "persistence", "reference"], "other")
    rows["size_bin"] = cohort.size_bins(rows["longest_diameter_mm"])
    c.rows = rows


def _covariate_warnings(c: _Cohort) -> None:
    """What the covariates allow, with a warning for each statistic they do not."""
    rows, warnings = c.rows, c.warnings
    dosed = _isfinite(rows["dose_mg_per_kg"])
    study = rows["agent"] == STUDY_AGENT
    c.dose_known, c.has_study_rows = bool(dosed.any()), bool(study.any())
    c.tumor_known = bool(rows["primary_tumor"].notna().any())
    if not c.has_study_rows:
        _warn(warnings, f"no {STUDY_AGENT} rows in the lesion tables: dose response, "
                        f"concentration and persistence statistics are skipped")
    if not c.dose_known:
        _warn(warnings, "dose_mg_per_kg unknown for every participant: dose response, dose "
                        "normalisation, sensitivity per dose and %ID/g are skipped")
    elif (study & ~dosed).any():
        miss = sorted(set(rows.loc[study & ~dosed, "participant"]))
        _warn(warnings, f"dose_mg_per_kg missing for {', '.join(map(_sub, miss))}: left out of "
                        f"the dose statistics")
    if not _isfinite(rows["weight_kg"]).any():
        _warn(warnings, "weight_kg unknown for every participant: %ID/g is skipped")
    if not c.tumor_known:
        _warn(warnings, "primary_tumor unknown for every participant: statistics by primary "
                        "tumour are skipped")


def _derived_quantities(c: _Cohort) -> None:
    """Dose-normalised SE, %ID/g (study agent only) and the detection limit on every row."""
    rows = c.rows
    study = (rows["agent"] == STUDY_AGENT).to_numpy()
    se, dose, weight, conc = (rows[k].to_numpy(float) for k in (
        "se_mean_percent", "dose_mg_per_kg", "weight_kg", "conc_mean_mg_per_L"))
    rows["se_dose_normalised_percent"] = np.where(study, cohort.dose_normalised_se(se, dose),
                                                  _NAN)
    uptake = (study & ~rows["is_control"].to_numpy() & np.isfinite(conc) & np.isfinite(dose)
              & np.isfinite(weight))
    rows["percent_id_per_g"] = np.where(
        uptake, percent_injected_dose_per_gram(conc, dose, weight), _NAN)
    _detection_limits(rows)


#: ``detection_limit_source`` of a row: where its limit of detection came from.
LOD_FROM_LESION = "lesion"          # the participant table's conc_lod_mM (qmri/uncertainty.py)
LOD_FROM_CONTROLS = "controls"      # 3 x RMS of the session's control means (older tables)
LOD_FROM_OWN_MEAN = "own mean"      # 3 x sd / sqrt(n) of the region (older tables, no controls)


def _detection_limits(rows: pd.DataFrame) -> None:
    """Limit of detection, detection and quantification of every row with an agent.

    Where the participant table has them (``conc_lod_mM``, ``conc_detected``,
    ``conc_quantifiable``: each region's own standard error and the session's between-session
    term, :mod:`bids_agquant.qmri.uncertainty`), they are used as written. Tables of older
    versions: the limit per participant x session x agent from its control rows (a lesion of a
    session without them: from its own mean), and detected = quantified = above it."""
    has_agent = rows["agent"].notna()
    lod = pd.Series(_NAN, index=rows.index)
    if has_agent.any():
        controls = rows["conc_mean_mM"].where(rows["is_control"])[has_agent]
        lod[has_agent] = controls.groupby([rows.loc[has_agent, k] for k in _SESSION]).transform(
            lambda v: cohort.detection_limit(v.to_numpy(float)))
    own = [cohort.detection_limit_of_mean(sd, n)
           for sd, n in zip(rows["conc_sd_mM"], rows["n_voxels"])]
    source = pd.Series(np.where(_isfinite(lod), LOD_FROM_CONTROLS, LOD_FROM_OWN_MEAN),
                       index=rows.index, dtype=object)
    lod = lod.where(_isfinite(lod) | rows["is_control"], own)
    per_region = _isfinite(rows["conc_lod_mM"])
    lod = lod.where(~per_region, rows["conc_lod_mM"]).where(has_agent)
    source = source.where(~per_region, LOD_FROM_LESION).where(has_agent & _isfinite(lod), None)
    conc = rows["conc_mean_mM"]
    above = _isfinite(conc) & _isfinite(lod) & (conc > lod)
    detected = rows["conc_detected"].where(rows["conc_detected"].notna(), above)
    quantified = rows["conc_quantifiable"].where(rows["conc_quantifiable"].notna(), above)
    rows["detection_limit_mM"] = lod
    rows["detection_limit_source"] = source
    rows["conc_detected"] = detected.astype(object).where(has_agent, None)
    rows["conc_quantified"] = quantified.astype(object).where(has_agent, None)


def _select_lesions(c: _Cohort) -> None:
    """Warn when no peak-session lesion has an SE (the selections are :class:`_Cohort`'s)."""
    if c.has_study_rows and c.peak.empty:
        _warn(c.warnings, f"no measurable lesion (>= 10 mm) with a {STUDY_AGENT} SE: cohort "
                          f"statistics on lesions are empty")


def _by_dose(dosed: pd.DataFrame) -> pd.DataFrame:
    """Summary of the peak SE per dose (one row per dose, ascending)."""
    out = []
    for d, g in dosed.groupby("dose_mg_per_kg"):
        s = cohort.summarise(g["se_mean_percent"].to_numpy(float))
        out.append({"dose_mg_per_kg": d, "n_participants": g["participant"].nunique(),
                    "n_lesions": s.n, **_summary_row(s)})
    return pd.DataFrame(out, columns=["dose_mg_per_kg", "n_participants", "n_lesions", "mean",
                                      "sd", "median", "min", "max"])


def _dose_response(c: _Cohort) -> None:
    """Per-dose SE and the dose-response regressions (paper Fig. 2A)."""
    dosed = c.peak[_isfinite(c.peak["dose_mg_per_kg"])]
    by_dose = _by_dose(dosed)
    c.tables["dose_response_by_dose"] = Table.registered(
        "dose_response_by_dose", "Signal enhancement per AGuIX dose",
        "Mean and SD of the peak-session SE over measurable lesions (>= 10 mm), per dose "
        "(paper Fig. 2A).",
        by_dose)
    reg_rows = []
    if len(by_dose) >= 2:
        fit_means = cohort.linear_regression(by_dose["dose_mg_per_kg"].to_numpy(float),
                                             by_dose["mean"].to_numpy(float))
        fit_all = cohort.linear_regression(dosed["dose_mg_per_kg"].to_numpy(float),
                                           dosed["se_mean_percent"].to_numpy(float))
        c.fits["dose_means"], c.fits["dose_all"] = fit_means, fit_all
        if len(by_dose) < 3:
            _warn(c.warnings, f"only {len(by_dose)} AGuIX doses: the line through the per-dose "
                              f"means has no confidence interval (R2 = 1 by construction); see "
                              f"the regression of all lesion SEs on dose")
        reg_rows = [dict(model="mean SE per dose on dose", x="dose (mg/kg)", y="mean SE (%)",
                         **_fit_row(fit_means)),
                    dict(model="lesion SE on dose", x="dose (mg/kg)", y="SE (%)",
                         **_fit_row(fit_all))]
    elif c.dose_known and c.has_study_rows:
        _warn(c.warnings, "fewer than two AGuIX doses with measurable lesions: no dose-response "
                          "regression")
    c.tables["dose_response_regression"] = Table.registered(
        "dose_response_regression", "Dose response: regressions of SE on dose",
        "Ordinary least squares with 95 % confidence intervals (t distribution, n-2 dof); "
        "slope in % per mg/kg.", reg_rows)


def _by_tumour_and_size(c: _Cohort) -> None:
    """Dose-normalised SE by primary tumour and size bin, and the tests between groups."""
    peak = c.peak
    norm = peak[_isfinite(peak["se_dose_normalised_percent"])]
    factors = [("primary_tumor", None)] if c.tumor_known else []
    if len(norm):
        factors.append(("size_bin", [cohort.size_bin(lo) for lo, _ in cohort.SIZE_BINS_MM]
                        + [cohort.OTHER_SIZE_BIN]))
    grp_rows, test_rows = [], []
    for factor, order in factors:
        sel = norm[norm[factor].notna()]
        values = sel["se_dose_normalised_percent"].to_numpy(float)
        labels = sel[factor].to_numpy(object)
        grp_rows += [{"factor": factor, "group": s.group, "n": s.n, **_summary_row(s)}
                     for s in cohort.summarise_groups(values, labels, order)
                     if s.n or factor != "size_bin" or s.group != cohort.OTHER_SIZE_BIN]
        tested = labels != cohort.OTHER_SIZE_BIN
        t = cohort.group_difference_test(values=values[tested], labels=labels[tested],
                                         test="kruskal")
        problem, _ = mixed.design_problem(sel["participant"].to_numpy(object)[tested],
                                          labels[tested], **FACTOR_NAMES[factor])
        if problem and math.isfinite(t.p_value):
            t = replace(t, statistic=_NAN, p_value=_NAN, note=f"not testable: {problem}")
        c.tests[factor] = t
        test_rows.append(dict(factor=factor, **t.as_dict()))
    if len(peak) and c.tumor_known and not len(norm):
        _warn(c.warnings, "no dose-normalised SE (dose missing): primary tumour and size "
                          "statistics skipped")
    c.tables["se_normalised_by_group"] = Table.registered(
        "se_normalised_by_group", "Dose-normalised SE by primary tumour and size",
        "SE * 100 / dose over measurable lesions at the peak AGuIX session (paper Fig. 2B/C).",
        grp_rows)
    c.tables["group_tests"] = Table.registered(
        "group_tests", "Tests for differences between groups",
        "Kruskal-Wallis H test on the dose-normalised SE (small, skewed groups; no normality "
        "assumption), lesions treated as independent (see mixed_models for the test that is "
        "not); no p-value where the factor is confounded with participant. Size bins outside "
        "10-50 mm are not tested.",
        test_rows)


def _mixed_models(c: _Cohort) -> None:
    """Dose response, primary tumour and size bin with lesions nested in participants
    (:mod:`bids_agquant.group.mixed`), beside the lesion-level fits that ignore it. The
    headlines (``fits["headlines"]``, keyed by the regressor's column: ``dose_mg_per_kg``,
    ``primary_tumor``, ``size_bin``) are ``{"mixed": row, "lesion": row}``."""
    peak = c.peak
    rows: list[mixed.MixedRow] = []
    models: dict[str, str] = {}
    dosed = peak[_isfinite(peak["dose_mg_per_kg"])]
    if c.dose_known and len(dosed):
        models["dose_mg_per_kg"] = "dose response"
        rows += mixed.fit_slope(dosed, y="se_mean_percent", x="dose_mg_per_kg",
                                model="dose response", response="SE (%)", term="dose (mg/kg)",
                                unit="% per mg/kg")
    norm = peak[_isfinite(peak["se_dose_normalised_percent"])]
    bins = [cohort.size_bin(lo) for lo, _ in cohort.SIZE_BINS_MM]
    factors = ([("primary_tumor", "primary tumour", norm, None)] if c.tumor_known else []) + [
        ("size_bin", "size bin", norm[norm["size_bin"] != cohort.OTHER_SIZE_BIN], bins)]
    for factor, model, sel, order in factors:
        if len(sel):
            models[factor] = model
            rows += mixed.fit_factor(sel, y="se_dose_normalised_percent", factor=factor,
                                     model=model, response="dose-normalised SE (%)", unit="%",
                                     order=order, **FACTOR_NAMES[factor])
    c.fits["mixed_models"] = rows
    c.fits["headlines"] = {k: {"mixed": mixed.headline(rows, m, mixed.MIXED),
                               "lesion": mixed.headline(rows, m, mixed.LESION_LEVEL)}
                           for k, m in models.items()}
    c.tables["mixed_models"] = Table.registered(
        "mixed_models", "Mixed-effects models: lesions nested in participants",
        "Linear mixed models with a random intercept per participant (REML; Wald CI and p with "
        "between-within degrees of freedom), each beside the lesion-level OLS that treats "
        "lesions as independent (secondary view). Status says what the design supports.",
        [r.as_dict() for r in rows])


def _reference_pairs(c: _Cohort) -> tuple[pd.DataFrame, int]:
    """Peak lesions with the reference SE of the same lesion (``se_reference_percent``; the
    last reference row of a lesion counts) and how many lesions have a reference SE."""
    m = c.measurable
    ref = m[(m["session_role"] == "reference") & _isfinite(m["se_mean_percent"])]
    ref = (ref.drop_duplicates(_LESION, keep="last")[_LESION + ["se_mean_percent"]]
           .rename(columns={"se_mean_percent": "se_reference_percent"}))
    return c.peak.merge(ref, on=_LESION, how="inner"), len(ref)


def _aguix_vs_dotarem(c: _Cohort) -> None:
    """Peak AGuIX SE against the reference Dotarem SE of the same lesions, per primary tumour
    at the highest paired dose."""
    pairs, n_ref = _reference_pairs(c)
    if c.has_study_rows and not n_ref:
        _warn(c.warnings, f"no {REFERENCE_AGENT} session with measurable lesions: AGuIX versus "
                          f"Dotarem statistics are skipped")
    cmp_rows = []
    if len(pairs):
        doses = pairs["dose_mg_per_kg"][_isfinite(pairs["dose_mg_per_kg"])]
        scoped, scope_label = pairs, "all"
        if len(doses):
            scope_dose = float(doses.max())
            scoped, scope_label = pairs[pairs["dose_mg_per_kg"] == scope_dose], f"{scope_dose:g}"
        cmp_fits: dict[str, cohort.LinearFit] = {}
        for name, g in [("all", scoped), *scoped.groupby("primary_tumor")]:
            cmp_fits[name] = fit = cohort.linear_regression(
                g["se_reference_percent"].to_numpy(float), g["se_mean_percent"].to_numpy(float))
            cmp_rows.append(dict(dose_or_scope=scope_label, primary_tumor=name,
                                 x="Dotarem SE (%)", y="AGuIX SE (%)", **_fit_row(fit)))
        c.fits["aguix_vs_dotarem"] = cmp_fits
        c.fits["aguix_vs_dotarem_scope"] = scope_label
    c.tables["aguix_vs_dotarem"] = Table.registered(
        "aguix_vs_dotarem", "AGuIX versus Dotarem, lesion by lesion",
        "Regression of the peak AGuIX SE on the reference Dotarem SE of the same measurable "
        "lesions, per primary tumour, at the highest dose (paper Fig. 3A: 100 mg/kg, the same Gd "
        "quantity as one Dotarem dose).",
        cmp_rows)
    _sensitivity(c, pairs)


def _sensitivity(c: _Cohort, pairs: pd.DataFrame) -> None:
    """Sensitivity of AGuIX relative to Dotarem per dose, over the paired lesions."""
    sens_rows = []
    for d, sel in pairs[_isfinite(pairs["dose_mg_per_kg"])].groupby("dose_mg_per_kg"):
        agent = sel["se_mean_percent"].to_numpy(float)
        reference = sel["se_reference_percent"].to_numpy(float)
        ma, md = float(np.mean(agent)), float(np.mean(reference))
        per = cohort.sensitivity_percent(agent, reference)
        sens_rows.append({"dose_mg_per_kg": d, "n_lesions": len(sel),
                          "se_aguix_mean_percent": ma, "se_dotarem_mean_percent": md,
                          "sensitivity_percent": float(cohort.sensitivity_percent(ma, md)),
                          "sensitivity_median_lesion_percent":
                              float(np.nanmedian(per)) if np.isfinite(per).any() else _NAN})
    c.tables["sensitivity_by_dose"] = Table.registered(
        "sensitivity_by_dose", "Sensitivity of AGuIX relative to Dotarem",
        "100 x mean AGuIX SE / mean Dotarem SE over the measurable lesions seen in both, per dose.",
        sens_rows)


def _se_vs_concentration(c: _Cohort) -> None:
    """Per-participant regression of lesion SE on concentration (paper Fig. 3B)."""
    peak = c.peak
    by_participant = dict(tuple(peak[_isfinite(peak["conc_mean_mg_per_L"])]
                                .groupby("participant", sort=False)))
    conc_rows = []
    conc_fits: dict[str, cohort.LinearFit] = {}
    for p in (p for p in c.participants if p in by_participant):
        sel = by_participant[p]
        conc_fits[p] = fit = cohort.linear_regression(
            sel["conc_mean_mg_per_L"].to_numpy(float), sel["se_mean_percent"].to_numpy(float))
        m, sd = _mean_sd(sel["conc_mean_mg_per_L"])
        first = sel.iloc[0]
        conc_rows.append(dict(participant_id=_sub(p), session_id=_ses(first["session"]),
                              dose_mg_per_kg=first["dose_mg_per_kg"],
                              primary_tumor=first["primary_tumor"],
                              conc_mean_mg_per_L_mean=m, conc_mean_mg_per_L_sd=sd,
                              **_fit_row(fit)))
    c.fits["se_vs_concentration"] = conc_fits
    c.tables["se_vs_concentration"] = Table.registered(
        "se_vs_concentration", "SE versus concentration, per participant",
        "Regression of the lesion SE (%) on the lesion AGuIX concentration (mg/L) over the "
        "measurable lesions of the peak session (paper Fig. 3B); slope in % per mg/L.",
        conc_rows)


def _upper_bounds(c: _Cohort) -> None:
    """SE-based upper bounds of the concentration where it is not quantified (on the rows): with
    the participant's SE-versus-concentration slope and, conservatively, its lower 95 % limit."""
    rows = c.rows
    conc_fits = c.fits.get("se_vs_concentration", {})
    bounded = ((rows["session_role"] == "persistence") & ~rows["is_control"]
               & rows["conc_quantified"].eq(False) & rows["participant"].isin(conc_fits)
               & _isfinite(rows["se_mean_percent"])).to_numpy()
    se_pos = np.maximum(rows["se_mean_percent"].to_numpy(float), 0.0)   # no enhancement -> 0
    for column, slope in (("conc_upper_mg_per_L", "slope"),
                          ("conc_upper_conservative_mg_per_L", "slope_ci_low")):
        slopes = rows["participant"].map({p: getattr(f, slope) for p, f in conc_fits.items()})
        rows[column] = np.where(bounded, se_upper_bound_concentration(
            se_pos, slopes.to_numpy(float)), _NAN)


def _percent_id_per_g(c: _Cohort) -> None:
    """Uptake in percent of the injected dose per gram."""
    lesions = c.lesions
    sel = lesions[(lesions["agent"] == STUDY_AGENT) & _isfinite(lesions["percent_id_per_g"])]
    c.tables["percent_id_per_g"] = Table.registered(
        "percent_id_per_g", "Uptake: percent of injected dose per gram",
        "%ID/g = 100 * (C mg/L / 1000) / (dose mg/kg * weight kg), tissue density 1 kg/L, for "
        "every AGuIX lesion row with a concentration.",
        _ids(sel))


def _persistence_lesions(c: _Cohort) -> pd.DataFrame:
    """Measurable lesions of the later AGuIX sessions with their peak-session values."""
    m = c.measurable
    later = m[(m["session_role"] == "persistence") & _isfinite(m["se_mean_percent"])]
    peak = (c.peak.drop_duplicates(_LESION, keep="last")
            [_LESION + ["session", "se_mean_percent", "conc_mean_mg_per_L"]]
            .rename(columns={"session": "peak", "se_mean_percent": "se_peak_percent",
                             "conc_mean_mg_per_L": "conc_peak_mg_per_L"}))
    pers = later.merge(peak, on=_LESION, how="inner")
    quantified = pers["conc_quantified"].eq(True)
    return _ids(pers, peak_session="peak", later_session="session").assign(
        se_later_percent=pers["se_mean_percent"],
        persistence_percent=cohort.persistence_percent(pers["se_mean_percent"].to_numpy(float),
                                                       pers["se_peak_percent"].to_numpy(float)),
        conc_later_mg_per_L=pers["conc_mean_mg_per_L"].where(quantified),
        conc_later_stderr_mg_per_L=pers["conc_stderr_mg_per_L"].where(quantified),
        conc_quantified=quantified)


def _persistence_row(sel: pd.DataFrame, fit: cohort.LinearFit | None) -> dict:
    """One row of ``persistence_by_participant``: a participant's lesions at one later session."""
    pm, psd = _mean_sd(sel["se_peak_percent"])
    lm, lsd = _mean_sd(sel["se_later_percent"])
    slope = fit.slope if fit is not None else _NAN
    quantified = sel[sel["conc_quantified"]]
    unquantified = sel[~sel["conc_quantified"]]
    w_mean, w_se = cohort.inverse_variance_mean(quantified["conc_later_mg_per_L"].to_numpy(float),
                                                quantified["conc_later_stderr_mg_per_L"]
                                                .to_numpy(float))
    se_unq = max(_mean(unquantified["se_later_percent"]), 0.0) if len(unquantified) else _NAN
    upper = (float(se_upper_bound_concentration(se_unq, slope))
             if _finite(slope) and slope > 0 and _finite(se_unq) else _NAN)
    first = sel.iloc[0]
    return dict(participant_id=first["participant_id"], peak_session=first["peak_session"],
                later_session=first["later_session"], n_lesions=len(sel),
                se_peak_mean_percent=pm, se_peak_sd_percent=psd, se_later_mean_percent=lm,
                se_later_sd_percent=lsd,
                persistence_percent=float(cohort.persistence_percent(lm, pm)),
                n_quantified=len(quantified),
                conc_later_mean_mg_per_L=(_mean(quantified["conc_later_mg_per_L"])
                                          if len(quantified) else _NAN),
                n_detected=int(sel["conc_detected"].eq(True).sum()),
                conc_later_weighted_mean_mg_per_L=w_mean,
                conc_later_weighted_stderr_mg_per_L=w_se,
                slope_percent_per_mg_per_L=slope, conc_upper_mg_per_L=upper)


def _persistence(c: _Cohort) -> None:
    """Later AGuIX sessions against the peak, per lesion and per participant."""
    conc_fits = c.fits.get("se_vs_concentration", {})
    pers = _persistence_lesions(c)
    c.tables["persistence"] = Table.registered(
        "persistence", "Persistence at later AGuIX sessions, per lesion",
        "SE at each later AGuIX session (trial D8) against the peak session (D1), and the "
        "concentration or, where it cannot be quantified, its SE-based upper bound.",
        pers)
    groups = dict(tuple(pers.groupby(["participant_id", "later_session"], sort=False)))
    keys = sorted(groups, key=lambda k: (_natural_key(k[0]), _natural_key(k[1])))
    pp_rows = [_persistence_row(groups[k], conc_fits.get(groups[k]["participant"].iloc[0]))
               for k in keys]
    c.tables["persistence_by_participant"] = Table.registered(
        "persistence_by_participant", "Persistence per participant",
        "Mean lesion SE at the peak and later AGuIX sessions; the mean later concentration of "
        "the lesions where it is quantified and, for the others, the upper bound mean later SE "
        "over the participant's SE-versus-concentration slope (paper: about 10 uM at D8).",
        pp_rows)


def _nan_stat(f, values: np.ndarray) -> float:
    return float(f(values)) if np.isfinite(values).any() else _NAN


def _control_row(key: tuple, sel: pd.DataFrame, warnings: list[str]) -> dict:
    """One row of ``controls`` (the control regions of a participant, session and agent),
    flagged, with a warning, when they show SE or concentration."""
    p, s, a = key
    se, cc, dr = (sel[k].to_numpy(float) for k in ("se_mean_percent", "conc_mean_mM",
                                                   "delta_r1_mean_per_s"))
    se_max = _nan_stat(lambda v: np.nanmax(np.abs(v)), se)
    cc_max = _nan_stat(lambda v: np.nanmax(np.abs(v)), cc)
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
    return dict(participant_id=_sub(p), session_id=_ses(s), contrast_agent=a,
                session_role=sel["session_role"].iloc[0], n_controls=len(sel),
                se_control_mean_percent=_nan_stat(np.nanmean, se),
                se_control_max_abs_percent=se_max, conc_control_mean_mM=_nan_stat(np.nanmean, cc),
                conc_control_max_abs_mM=cc_max,
                delta_r1_control_mean_per_s=_nan_stat(np.nanmean, dr),
                detection_limit_mM=_nan_stat(np.nanmedian, sel["detection_limit_mM"].to_numpy(float)),
                flag=flag)


def _controls(c: _Cohort) -> None:
    """Healthy-tissue control regions per participant, session and agent, with flags."""
    rows = c.rows
    groups = dict(tuple(rows[rows["is_control"] & rows["agent"].notna()]
                        .groupby(_SESSION, sort=False)))
    keys = sorted(groups, key=lambda k: (_natural_key(k[0]), c.roles[k[0]]["order"].index(k[1]),
                                         k[2]))
    ctl_rows = [_control_row(k, groups[k], c.warnings) for k in keys]
    if len(rows) and not ctl_rows:
        _warn(c.warnings, "no healthy-tissue control rows (control-<k>) in the lesion tables")
    c.tables["controls"] = Table.registered(
        "controls", "Healthy-tissue controls",
        f"Control regions should show no SE and no concentration; flagged when |SE| > "
        f"{CONTROL_SE_THRESHOLD_PERCENT:g} % or |conc| > {CONTROL_CONC_THRESHOLD_MM:g} mM.",
        ctl_rows)


def _cohort_table(c: _Cohort) -> None:
    """Every row with covariates, roles and derived quantities (first table, for readers)."""
    rows = c.rows
    keys = [(_natural_key(p), o, a or "", ctl, _natural_key(les)) for p, o, a, ctl, les in zip(
        rows["participant"], rows["session_order"], rows["agent"], rows["is_control"],
        rows["lesion_id"])]
    ordered = rows.iloc[sorted(range(len(rows)), key=keys.__getitem__)]
    frame = _ids(ordered).assign(
        contrast_agent=ordered["agent"].where(ordered["agent"].notna(), ordered["agent_label"]))
    cohort_table = Table.registered(
        "cohort_lesions", "Cohort lesion table",
        "Every row of every participant lesion table, with covariates, session roles and the "
        "derived quantities of the group level.", frame)
    c.tables = {"cohort_lesions": cohort_table, **c.tables}


_clean = tables.json_safe


def _summary(out_tables, fits, tests, roles, warnings, participants) -> dict:
    cohort_rows = out_tables["cohort_lesions"].frame
    out = {
        "participants": [_sub(p) for p in participants],
        "n_participants": len(participants),
        "n_measurable_lesions_peak": int(((cohort_rows["session_role"] == "peak")
                                          & cohort_rows["measurable"]
                                          & ~cohort_rows["is_control"]).sum()),
        "session_roles": {_sub(p): {"order": [_ses(s) for s in v["order"]],
                                    "ordered_by": v["source"],
                                    "sessions_by_agent": {a: [_ses(s) for s in ss] for a, ss
                                                          in v["sessions_by_agent"].items()}}
                          for p, v in roles.items()},
        "dose_response": {k: fits[f].as_dict() for k, f in
                          (("mean_se_on_dose", "dose_means"), ("lesion_se_on_dose", "dose_all"))
                          if f in fits},
        "group_tests": {k: t.as_dict() for k, t in tests.items()},
        "mixed_models": [r.as_dict() for r in fits.get("mixed_models", [])],
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
