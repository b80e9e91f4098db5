"""Group level, statistics that respect clustering: lesions are nested in participants.

Lesions of one participant share that participant's dose, tumour type, physiology and scanner
session, so they are not independent. Each effect is fitted twice:

- **mixed model** (the primary view): linear mixed-effects model with a random intercept per
  participant, fitted by REML (:class:`statsmodels.regression.mixed_linear_model.MixedLM`).
  Confidence intervals and p-values are Wald tests with a t distribution whose degrees of freedom
  follow the between-within rule: a term constant within every participant (dose, tumour type)
  has ``participants - participant-level parameters`` degrees of freedom, a term that varies
  within participants (size bin) ``lesions - participants - within parameters``;
- **lesion-level OLS** (the secondary view): ordinary least squares over lesions as if they were
  independent, which they are not; beside the mixed model only to show what ignoring clustering
  does.

Every row has a ``status`` (:data:`STATUSES`): ``ok``; ``not testable`` (the design cannot
separate the effect from the participant, see :func:`design_problem`: no p-value, no CI, the note
says why); ``singular`` (the participant variance is estimated at its boundary, zero: the
estimate is then the OLS one, and its CI and p-value use participant-clustered (CR1) standard
errors with ``participants - 1`` degrees of freedom, which stay honest about clustering whatever
the variance estimate); ``failed`` (the fit did not converge or raised: the note carries the
message, no numbers).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

__all__ = ["MixedRow", "STATUSES", "OK", "NOT_TESTABLE", "SINGULAR", "FAILED", "MIXED",
           "LESION_LEVEL", "MIN_PARTICIPANTS", "MIN_PARTICIPANTS_PER_LEVEL",
           "BOUNDARY_LOGLIKE_TOLERANCE",
           "CONFIDENCE", "design_problem", "fit_slope", "fit_factor", "OMNIBUS",
           "headline"]

OK, NOT_TESTABLE, SINGULAR, FAILED = "ok", "not testable", "singular", "failed"
#: Status of a row of ``mixed_models.tsv``, in this order of preference.
STATUSES = (OK, NOT_TESTABLE, SINGULAR, FAILED)
#: Method of a row: the primary view and the secondary one.
MIXED = "mixed model (participant random intercept, REML)"
LESION_LEVEL = "lesion-level OLS (ignores clustering)"
#: Fewest participants for any between-participant inference.
MIN_PARTICIPANTS = 3
#: Fewest participants a level of a factor needs to be compared with another level; a level
#: with fewer is left out of the test (said in the note).
MIN_PARTICIPANTS_PER_LEVEL = 2
#: The participant variance is at its boundary when the REML log-likelihood with (almost) zero
#: participant variance is within this of the fitted one, or above it.
BOUNDARY_LOGLIKE_TOLERANCE = 1e-3
_BOUNDARY_RELATIVE_VARIANCE = 1e-8     # "almost zero": random-intercept variance / residual
CONFIDENCE = 0.95
#: ``term`` of the row that tests all levels of a factor at once (Wald F test).
OMNIBUS = "all levels equal"
_NAN = float("nan")


@dataclass(frozen=True)
class MixedRow:
    """One row of ``mixed_models.tsv`` (the column registry describes each field)."""
    model: str
    response: str
    term: str
    unit: str
    method: str
    status: str
    estimate: float = _NAN
    ci_low: float = _NAN
    ci_high: float = _NAN
    statistic: float = _NAN
    df: float = _NAN
    p_value: float = _NAN
    n_lesions: int = 0
    n_participants: int = 0
    participant_variance: float = _NAN
    residual_variance: float = _NAN
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def testable(self) -> bool:
        """The design supports the test (status neither ``not testable`` nor ``failed``)."""
        return self.status in (OK, SINGULAR)

    @property
    def singular(self) -> bool:
        return self.status == SINGULAR

    @property
    def reason(self) -> str:
        """Why there is no p-value, or what a singular fit fell back to (the note without the
        status prefix)."""
        return self.note.removeprefix(f"{NOT_TESTABLE}: ")


# --------------------------------------------------------------------------------------------
# What the design supports
# --------------------------------------------------------------------------------------------
def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def design_problem(participants: Sequence, levels: Sequence | None = None, *,
                   factor_name: str = "the factor", level_name: str = "level"
                   ) -> tuple[str | None, list[str]]:
    """Why the design cannot test an effect (None when it can), and the levels left out.

    ``participants``: the participant of each lesion; ``levels``: the factor level of each lesion
    (None for a participant-level continuous covariate, which needs only
    :data:`MIN_PARTICIPANTS`). A level with fewer than :data:`MIN_PARTICIPANTS_PER_LEVEL`
    participants is left out (its mean is one participant's); the factor is not testable when
    fewer than two levels remain.
    """
    part = pd.Series(list(participants), dtype=object)
    n_part = part.nunique()
    if n_part < MIN_PARTICIPANTS:
        return (f"fewer than {MIN_PARTICIPANTS} participants ({n_part}): no between-participant "
                f"inference"), []
    if levels is None:
        return None, []
    per_level = part.groupby(pd.Series(list(levels), dtype=object)).nunique()
    if len(per_level) < 2:
        return f"{factor_name} has one {level_name} only", []
    small = sorted(str(k) for k, n in per_level.items() if n < MIN_PARTICIPANTS_PER_LEVEL)
    if (per_level == 1).all():
        return (f"{factor_name} is confounded with participant (1 participant per "
                f"{level_name})"), small
    if len(per_level) - len(small) < 2:
        return (f"{factor_name} is confounded with participant (fewer than "
                f"{MIN_PARTICIPANTS_PER_LEVEL} participants in every {level_name} but one: "
                f"{', '.join(small)})"), small
    return None, small


# --------------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Design:
    y: np.ndarray
    X: np.ndarray               # with the intercept column first
    names: list[str]            # one per column of X
    groups: np.ndarray


def _is_between(design: _Design) -> np.ndarray:
    """Per column of X: constant within every participant."""
    frame = pd.DataFrame(design.X).groupby(design.groups)
    return (frame.nunique() <= 1).all(axis=0).to_numpy()


def _bw_df(design: _Design) -> np.ndarray:
    """Between-within degrees of freedom of each fixed effect."""
    between = _is_between(design)
    n, g = len(design.y), len(np.unique(design.groups))
    return np.where(between, g - between.sum(), n - g - (~between).sum()).astype(float)


def _wald(est: np.ndarray, cov: np.ndarray, dfs: np.ndarray, cols: list[int]) -> list[tuple]:
    """(estimate, ci_low, ci_high, t, df, p) of each column in ``cols``."""
    out = []
    for j in cols:
        se, df = math.sqrt(cov[j, j]) if cov[j, j] >= 0 else _NAN, float(dfs[j])
        if not (math.isfinite(se) and se > 0 and df >= 1):
            out.append((float(est[j]), _NAN, _NAN, _NAN, df, _NAN))
            continue
        t, q = est[j] / se, float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
        out.append((float(est[j]), float(est[j] - q * se), float(est[j] + q * se), float(t), df,
                    float(2 * stats.t.sf(abs(t), df))))
    return out


def _omnibus(est: np.ndarray, cov: np.ndarray, df: float, cols: list[int]) -> tuple[float, float]:
    """Wald F statistic and p-value that every column in ``cols`` is zero."""
    b, v = est[cols], cov[np.ix_(cols, cols)]
    try:
        f = float(b @ np.linalg.solve(v, b)) / len(cols)
    except np.linalg.LinAlgError:
        return _NAN, _NAN
    if not (math.isfinite(f) and df >= 1):
        return _NAN, _NAN
    return f, float(stats.f.sf(f, len(cols), df))


def _mixed_fit(design: _Design):
    """REML fit; returns (result, warning messages, converged) or raises on failure."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = MixedLM(design.y, design.X, groups=design.groups).fit(reml=True)
    messages = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    return result, messages, bool(result.converged)


def _at_boundary(result) -> bool:
    """The participant variance is at its boundary (see :data:`BOUNDARY_LOGLIKE_TOLERANCE`)."""
    if not float(np.asarray(result.cov_re)[0, 0]) > 0:
        return True
    zero = MixedLMParams.from_components(np.asarray(result.fe_params),
                                         cov_re=np.full((1, 1), _BOUNDARY_RELATIVE_VARIANCE))
    with np.errstate(all="ignore"):
        ll_zero = float(result.model.loglike(zero, profile_fe=True))
    return ll_zero >= float(result.llf) - BOUNDARY_LOGLIKE_TOLERANCE


def _clustered_ols(design: _Design):
    return sm.OLS(design.y, design.X).fit(cov_type="cluster", use_t=True,
                                          cov_kwds={"groups": pd.factorize(design.groups)[0]})


def _estimates(design: _Design) -> dict:
    """The mixed-model view: estimates, covariance, dof, variances, status and note."""
    try:
        result, messages, converged = _mixed_fit(design)
        est = np.asarray(result.fe_params, float)
        cov = np.asarray(result.cov_params(), float)[: len(est), : len(est)]
        tau2, sigma2 = float(np.asarray(result.cov_re)[0, 0]), float(result.scale)
        if not np.isfinite([*est, tau2, sigma2, float(result.llf)]).all():
            raise RuntimeError("non-finite estimates (response or regressor out of range?)"
                               + (f": {'; '.join(messages)}" if messages else ""))
        singular = _at_boundary(result)
        # an optimiser that stalls next to the boundary, where the maximum lies, is singular;
        # anywhere else, non-convergence is a failure
        if not converged and not singular:
            raise RuntimeError("REML did not converge" + (f" ({'; '.join(messages)})"
                                                          if messages else ""))
        if not singular and not np.isfinite(np.diag(cov)).all():
            raise RuntimeError("no standard errors (Hessian not positive definite)"
                               + (f": {'; '.join(messages)}" if messages else ""))
    except Exception as exc:                       # noqa: BLE001 - any fit failure is reported
        return dict(status=FAILED, note=f"mixed model failed: {type(exc).__name__}: {exc}")
    g = len(np.unique(design.groups))
    if not singular:
        return dict(status=OK, est=est, cov=cov, dfs=_bw_df(design), tau2=tau2, sigma2=sigma2,
                    note="")
    ols = _clustered_ols(design)
    return dict(status=SINGULAR, est=np.asarray(ols.params, float),
                cov=np.asarray(ols.cov_params(), float), dfs=np.full(len(est), g - 1.0),
                tau2=tau2, sigma2=sigma2,
                note=(f"participant variance at the boundary ({tau2:.3g}, residual "
                      f"{sigma2:.3g}): the data show no participant effect to separate; "
                      f"estimate from OLS, CI and p from participant-clustered (CR1) standard "
                      f"errors, t with {g - 1} dof"))


def _lesion_level(design: _Design) -> dict:
    """The lesion-level view (OLS, lesions as independent); ``failed`` like the mixed view when
    the numbers are not finite, never ``ok`` beside a meaningless estimate."""
    n, k = design.X.shape
    with np.errstate(all="ignore"):
        ols = sm.OLS(design.y, design.X).fit()
        est, cov = np.asarray(ols.params, float), np.asarray(ols.cov_params(), float)
        scale = float(ols.scale)
    if not (np.isfinite(est).all() and np.isfinite(np.diag(cov)).all() and np.isfinite(scale)):
        return dict(status=FAILED, note="lesion-level fit failed: non-finite estimates "
                                        "(response or regressor out of range?)")
    return dict(status=OK, est=est, cov=cov, dfs=np.full(k, float(n - k)),
                tau2=_NAN, sigma2=scale, note="lesions treated as independent")


def _rows(design: _Design, base: MixedRow, terms: list[tuple[int, str]], omnibus: bool,
          problem: str | None, left_out_note: str) -> list[MixedRow]:
    """Rows of both views for the terms ``[(column, term label)]`` (and the omnibus test)."""
    counts = dict(n_lesions=len(design.y), n_participants=len(np.unique(design.groups)))
    labels = [t for _, t in terms] + ([OMNIBUS] if omnibus else [])
    out = []
    for method, view in ((MIXED, _estimates), (LESION_LEVEL, _lesion_level)):
        row = replace(base, method=method, **counts)
        if problem:
            out += [replace(row, term=t, status=NOT_TESTABLE, note=f"not testable: {problem}")
                    for t in labels]
            continue
        fit = view(design)
        note = "; ".join(s for s in (fit["note"], left_out_note) if s)
        if fit["status"] == FAILED:
            out += [replace(row, term=t, status=FAILED, note=note) for t in labels]
            continue
        common = dict(status=fit["status"], participant_variance=fit["tau2"],
                      residual_variance=fit["sigma2"], note=note)
        for (col, t), (e, lo, hi, stat, df, p) in zip(
                terms, _wald(fit["est"], fit["cov"], fit["dfs"], [c for c, _ in terms])):
            out.append(replace(row, term=t, estimate=e, ci_low=lo, ci_high=hi, statistic=stat,
                               df=df, p_value=p, **common))
        if omnibus:
            cols = [c for c, _ in terms]
            df = float(min(fit["dfs"][cols]))
            f, p = _omnibus(fit["est"], fit["cov"], df, cols)
            out.append(replace(row, term=OMNIBUS, statistic=f, df=df, p_value=p, **common))
    return out


def _clean(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    keep = np.ones(len(frame), bool)
    for c in columns:
        v = frame[c]
        keep &= (np.isfinite(v.to_numpy(float)) if pd.api.types.is_numeric_dtype(v)
                 else v.notna().to_numpy())
    return frame[keep]


def fit_slope(frame: pd.DataFrame, *, y: str, x: str, model: str, response: str, term: str,
              unit: str, group: str = "participant") -> list[MixedRow]:
    """Slope of ``y`` on ``x`` (both views); rows with a non-finite value are dropped."""
    sel = _clean(frame, [y, x, group])
    base = MixedRow(model=model, response=response, term=term, unit=unit, method="", status="")
    groups = sel[group].astype(str).to_numpy()
    problem, _ = design_problem(groups)
    xs = sel[x].to_numpy(float)
    if problem is None and np.unique(xs).size < 2:
        problem = f"no spread in {term}"
    design = _Design(sel[y].to_numpy(float), np.column_stack([np.ones(len(xs)), xs]),
                     ["intercept", term], groups)
    return _rows(design, base, [(1, term)], False, problem, "")


def fit_factor(frame: pd.DataFrame, *, y: str, factor: str, model: str, response: str,
               unit: str, factor_name: str, level_name: str, order: Sequence[str] | None = None,
               group: str = "participant") -> list[MixedRow]:
    """Differences of ``y`` between the levels of ``factor``: one row per level against the
    reference level (the one with most participants, ties by ``order``), and the omnibus test
    (both views). Levels with too few participants are left out (see :func:`design_problem`)."""
    sel = _clean(frame, [y, factor, group])
    base = MixedRow(model=model, response=response, term="", unit=unit, method="", status="")
    groups, levels = sel[group].astype(str).to_numpy(), sel[factor].astype(str).to_numpy()
    problem, small = design_problem(groups, levels, factor_name=factor_name,
                                    level_name=level_name)
    known = list(order) if order is not None else sorted(set(levels))
    known += sorted(set(levels) - set(known))
    n_part = pd.Series(groups).groupby(levels).nunique()
    kept = [k for k in known if k in n_part.index and k not in small]
    left_out = ("; ".join(f"{k} left out ({_plural(int(n_part[k]), 'participant')})"
                          for k in small) if small else "")
    if problem:                    # counts only: no fit
        design = _Design(sel[y].to_numpy(float), np.ones((len(sel), 1)), ["intercept"], groups)
        return _rows(design, base, [], True, problem, "")
    reference = max(kept, key=lambda k: (n_part[k], -kept.index(k)))
    others = [k for k in kept if k != reference]
    keep = np.isin(levels, kept)
    X = np.column_stack([np.ones(keep.sum())] + [(levels[keep] == k).astype(float)
                                                 for k in others])
    design = _Design(sel[y].to_numpy(float)[keep], X, ["intercept", *others], groups[keep])
    terms = [(j + 1, f"{k} - {reference}") for j, k in enumerate(others)]
    return _rows(design, base, terms, len(others) > 1, None, left_out)


def headline(rows: Sequence[MixedRow], model: str, method: str = MIXED) -> MixedRow | None:
    """The row of ``rows`` that answers "does ``model`` matter?" for ``method``: the all-levels
    test of a factor, or its one difference, or the slope; None when the model was not fitted."""
    mine = [r for r in rows if r.model == model and r.method == method]
    return next((r for r in mine if r.term == OMNIBUS), mine[0] if mine else None)

