"""Cohort statistics of the trial (pure numpy/scipy, no I/O).

What the group level reports, in the paper's terms (Verry et al. 2020, Fig. 2 and 3):

- ordinary least-squares line ``y = slope * x + intercept`` with R2, the two-sided p-value of the
  slope (t test, n - 2 degrees of freedom) and 95 % confidence intervals of slope and intercept
  from the t distribution (:func:`linear_regression`);
- dose-normalised signal enhancement ``SE * 100 / dose_mg_per_kg`` (:func:`dose_normalised_se`);
- grouping by primary tumour and by size bin of the longest diameter, 10-20 mm and 20-50 mm
  (:func:`size_bin`, :func:`summarise_groups`);
- a test for a difference between groups (:func:`group_difference_test`). The default is the
  Kruskal-Wallis H test: the groups are small (1 to ~20 lesions), SE is positive and right-skewed
  (the paper's SD is 50-70 % of the mean), and lesions of one patient are not independent, so a
  rank test that assumes neither normality nor equal variances is the safer choice. One-way ANOVA
  is available (``test="anova"``) for comparison with the paper's GraphPad analysis;
- sensitivity of one agent relative to another, ``100 * SE_agent / SE_reference``
  (:func:`sensitivity_percent`).

Units: SE in %, dose in mg/kg body weight, concentration in mg/L or mM as the caller says.
Non-finite values are dropped pairwise before any statistic; too few points give NaN, never an
exception (a small cohort must not crash the group level).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

_NAN_DEFAULT = float("nan")

__all__ = [
    "LinearFit", "GroupSummary", "GroupTest", "SIZE_BINS_MM", "OTHER_SIZE_BIN",
    "REFERENCE_DOSE_MG_PER_KG", "linear_regression", "dose_normalised_se", "size_bin",
    "size_bins", "summarise", "summarise_groups", "group_difference_test", "sensitivity_percent",
    "persistence_percent", "regress_by_group", "detection_limit", "DETECTION_LIMIT_K",
    "detection_limit_of_mean", "inverse_variance_mean", "STUDY_AGENT", "REFERENCE_AGENT", "CONTROL_SE_THRESHOLD_PERCENT",
    "CONTROL_CONC_THRESHOLD_MM", "MEASURABLE_DIAMETER_MM",
]

#: The paper normalises SE to its highest dose: SE_norm = SE * 100 / dose (mg/kg).
REFERENCE_DOSE_MG_PER_KG = 100.0
#: Size bins of the longest diameter (mm), lower bound inclusive, upper bound exclusive except for
#: the last bin, which includes its upper bound (a 50.0 mm lesion is "20-50 mm").
SIZE_BINS_MM: tuple[tuple[float, float], ...] = ((10.0, 20.0), (20.0, 50.0))
OTHER_SIZE_BIN = "other"


@dataclass(frozen=True)
class LinearFit:
    """Least-squares line ``y = slope * x + intercept`` and its uncertainty.

    ``slope_ci``/``intercept_ci`` are two-sided confidence intervals at ``confidence`` from the t
    distribution with ``n - 2`` degrees of freedom; ``p_value`` tests slope = 0 (two-sided).
    Fields are NaN when they cannot be computed (fewer than 2 points, or 2 points for the
    uncertainties, or no spread in x).
    """
    slope: float
    intercept: float
    r2: float
    r: float
    p_value: float
    n: int
    slope_se: float
    intercept_se: float
    slope_ci_low: float
    slope_ci_high: float
    intercept_ci_low: float
    intercept_ci_high: float
    residual_sd: float
    confidence: float = 0.95
    x_mean: float = _NAN_DEFAULT
    x_sxx: float = _NAN_DEFAULT            # sum of squared deviations of x from its mean

    @property
    def slope_ci(self) -> tuple[float, float]:
        return (self.slope_ci_low, self.slope_ci_high)

    @property
    def intercept_ci(self) -> tuple[float, float]:
        return (self.intercept_ci_low, self.intercept_ci_high)

    def predict(self, x) -> np.ndarray:
        return self.slope * np.asarray(x, dtype=float) + self.intercept

    def confidence_band(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise confidence band of the fitted line at ``x`` (level ``confidence``).

        ``y_hat +/- t * s * sqrt(1/n + (x - mean(x))^2 / Sxx)``; NaN when the fit has no
        residual degrees of freedom.
        """
        x = np.asarray(x, dtype=float)
        y = self.predict(x)
        if self.n < 3 or not math.isfinite(self.residual_sd) or not self.x_sxx > 0:
            nan = np.full(x.shape, np.nan)
            return nan, nan
        t = float(stats.t.ppf(0.5 + self.confidence / 2.0, self.n - 2))
        half = t * self.residual_sd * np.sqrt(1.0 / self.n + (x - self.x_mean) ** 2 / self.x_sxx)
        return y - half, y + half

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GroupSummary:
    """Descriptive statistics of one group (SD with ddof=1; NaN for n < 2)."""
    group: str
    n: int
    mean: float
    sd: float
    median: float
    minimum: float
    maximum: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GroupTest:
    """Result of a test for a difference between groups."""
    test: str                  # "kruskal-wallis" or "one-way anova"
    statistic: float           # H or F
    p_value: float
    n_groups: int              # groups that entered the test (n >= 1 each)
    n: int                     # values that entered the test
    groups: tuple[str, ...]
    note: str = ""             # why the test could not run, when p is NaN

    def as_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = ",".join(self.groups)
        return d


_NAN = float("nan")


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length (got {x.size} and {y.size})")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def linear_regression(x, y, confidence: float = 0.95) -> LinearFit:
    """Ordinary least squares of ``y`` on ``x`` with t-based confidence intervals.

    Pairs with a non-finite value are dropped. Textbook formulas (e.g. Draper & Smith):
    ``slope = Sxy / Sxx``, ``s2 = SSE / (n - 2)``, ``se(slope) = sqrt(s2 / Sxx)``,
    ``se(intercept) = sqrt(s2 * (1/n + mean(x)^2 / Sxx))``, CI = estimate +/- t_{1-a/2, n-2} * se.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x, y = _finite_pairs(x, y)
    n = int(x.size)
    nan_fit = dict(slope=_NAN, intercept=_NAN, r2=_NAN, r=_NAN, p_value=_NAN, n=n, slope_se=_NAN,
                   intercept_se=_NAN, slope_ci_low=_NAN, slope_ci_high=_NAN,
                   intercept_ci_low=_NAN, intercept_ci_high=_NAN, residual_sd=_NAN,
                   confidence=confidence)
    if n < 2:
        return LinearFit(**nan_fit)
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    with np.errstate(over="ignore", invalid="ignore"):
        sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    # no spread in x (np.ptp: the mean of equal large numbers can differ from them by rounding),
    # or sums beyond float range: no line can be fitted
    if not (sxx > 0.0 and np.ptp(x) > 0) or not all(map(math.isfinite, (sxx, syy, sxy))):
        return LinearFit(**nan_fit)
    slope = sxy / sxx
    intercept = ym - slope * xm
    denom = math.sqrt(sxx) * math.sqrt(syy)        # not sqrt(sxx * syy): that can underflow
    if denom > 0.0:
        r = float(np.clip(sxy / denom, -1.0, 1.0))
    else:
        r = _NAN                                   # y constant: correlation undefined
    r2 = r * r if math.isfinite(r) else _NAN
    out = dict(nan_fit, slope=float(slope), intercept=float(intercept), r=r, r2=r2,
               x_mean=float(xm), x_sxx=sxx)
    if n < 3:
        return LinearFit(**out)
    dof = n - 2
    resid = y - (slope * x + intercept)
    sse = float(resid @ resid)
    s2 = sse / dof
    slope_se = math.sqrt(s2 / sxx)
    intercept_se = math.sqrt(s2 * (1.0 / n + xm * xm / sxx))
    tcrit = float(stats.t.ppf(0.5 + confidence / 2.0, dof))
    if slope_se > 0.0:
        p = float(2.0 * stats.t.sf(abs(slope / slope_se), dof))
    else:
        p = 0.0 if slope != 0.0 and math.isfinite(slope) else _NAN   # a perfect line
    out.update(p_value=p, slope_se=slope_se, intercept_se=intercept_se,
               slope_ci_low=slope - tcrit * slope_se, slope_ci_high=slope + tcrit * slope_se,
               intercept_ci_low=intercept - tcrit * intercept_se,
               intercept_ci_high=intercept + tcrit * intercept_se,
               residual_sd=math.sqrt(s2))
    return LinearFit(**out)


def dose_normalised_se(se_percent, dose_mg_per_kg,
                       reference_dose_mg_per_kg: float = REFERENCE_DOSE_MG_PER_KG) -> np.ndarray:
    """SE scaled to the reference dose: ``SE * reference / dose`` (%; paper: reference 100 mg/kg).

    NaN where the dose is missing, zero or negative.
    """
    se = np.asarray(se_percent, dtype=float)
    dose = np.asarray(dose_mg_per_kg, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = se * (float(reference_dose_mg_per_kg) / dose)
    return np.where(np.isfinite(dose) & (dose > 0), out, np.nan)


def _bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} mm"


def size_bin(diameter_mm: float, bins: Sequence[tuple[float, float]] = SIZE_BINS_MM) -> str:
    """Size-bin label of a longest diameter (mm): ``"10-20 mm"``, ``"20-50 mm"`` or ``"other"``."""
    d = float(diameter_mm) if diameter_mm is not None else _NAN
    if not math.isfinite(d):
        return OTHER_SIZE_BIN
    for i, (lo, hi) in enumerate(bins):
        last = i == len(bins) - 1
        if lo <= d < hi or (last and d == hi):
            return _bin_label(lo, hi)
    return OTHER_SIZE_BIN


def size_bins(diameters_mm, bins: Sequence[tuple[float, float]] = SIZE_BINS_MM) -> np.ndarray:
    """Vectorised :func:`size_bin` (array of labels, dtype object)."""
    d = np.asarray(diameters_mm, dtype=float).ravel()
    labels = np.full(d.shape, OTHER_SIZE_BIN, dtype=object)
    for i, (lo, hi) in enumerate(bins):
        last = i == len(bins) - 1
        inside = (d >= lo) & ((d < hi) | (last & (d == hi)))
        labels[inside & (labels == OTHER_SIZE_BIN)] = _bin_label(lo, hi)
    return labels


def summarise(values, group: str = "") -> GroupSummary:
    """Mean, SD (ddof=1), median, min, max of the finite values."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return GroupSummary(group, 0, _NAN, _NAN, _NAN, _NAN, _NAN)
    sd = float(v.std(ddof=1)) if n > 1 else _NAN
    return GroupSummary(group, n, float(v.mean()), sd, float(np.median(v)), float(v.min()),
                        float(v.max()))


def summarise_groups(values, labels, order: Iterable[str] | None = None) -> list[GroupSummary]:
    """One :class:`GroupSummary` per label (in ``order`` when given, else sorted)."""
    groups = _split(values, labels)
    keys = list(order) if order is not None else sorted(groups)
    return [summarise(groups.get(k, np.empty(0)), k) for k in keys]


def _split(values, labels) -> dict[str, np.ndarray]:
    v = np.asarray(values, dtype=float).ravel()
    lab = np.asarray(labels, dtype=object).ravel()
    if v.shape != lab.shape:
        raise ValueError(f"values and labels must have the same length ({v.size} vs {lab.size})")
    out: dict[str, list] = {}
    for value, label in zip(v, lab):
        if label is None or (isinstance(label, float) and math.isnan(label)):
            continue
        if np.isfinite(value):
            out.setdefault(str(label), []).append(value)
    return {k: np.asarray(x) for k, x in out.items()}


def group_difference_test(groups: Mapping[str, Sequence[float]] | None = None, *,
                          values=None, labels=None, test: str = "kruskal") -> GroupTest:
    """Test whether the groups differ: Kruskal-Wallis H (default) or one-way ANOVA (``"anova"``).

    Pass either a mapping ``{group: values}`` or ``values`` and ``labels``. Non-finite values and
    empty groups are dropped; with fewer than two groups, or no spread at all, the p-value is NaN
    and ``note`` says why.
    """
    if groups is None:
        if values is None or labels is None:
            raise ValueError("give either groups or values and labels")
        groups = _split(values, labels)
    clean = {}
    for k, v in groups.items():
        a = np.asarray(v, dtype=float).ravel()
        a = a[np.isfinite(a)]
        if a.size:
            clean[str(k)] = a
    names = tuple(sorted(clean))
    n = int(sum(a.size for a in clean.values()))
    kind = test.lower().replace("_", "-")
    if kind in ("kruskal", "kruskal-wallis"):
        label = "kruskal-wallis"
    elif kind in ("anova", "one-way anova", "f-oneway"):
        label = "one-way anova"
    else:
        raise ValueError(f"unknown test {test!r}: use 'kruskal' or 'anova'")
    if len(clean) < 2:
        return GroupTest(label, _NAN, _NAN, len(clean), n, names,
                         note="fewer than two groups with data")
    arrays = [clean[k] for k in names]
    allv = np.concatenate(arrays)
    if np.all(allv == allv[0]):
        return GroupTest(label, _NAN, _NAN, len(clean), n, names, note="all values identical")
    if label == "kruskal-wallis":
        res = stats.kruskal(*arrays)
    else:
        if n - len(arrays) < 1:
            return GroupTest(label, _NAN, _NAN, len(clean), n, names,
                             note="no within-group degrees of freedom")
        res = stats.f_oneway(*arrays)
    return GroupTest(label, float(res.statistic), float(res.pvalue), len(clean), n, names)


def sensitivity_percent(se_agent_percent, se_reference_percent) -> np.ndarray:
    """Sensitivity of an agent relative to a reference agent, ``100 * SE_agent / SE_reference`` (%).

    NaN where the reference SE is not positive. Apply it to means (the paper's per-dose figure is
    the mean AGuIX SE over the mean Dotarem SE of the same lesions) or to single lesions.
    """
    a = np.asarray(se_agent_percent, dtype=float)
    ref = np.asarray(se_reference_percent, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 * a / ref
    return np.where(np.isfinite(ref) & (ref > 0), out, np.nan)


def persistence_percent(se_later_percent, se_peak_percent) -> np.ndarray:
    """Later SE as a percentage of the peak SE of the same lesion (NaN where peak SE <= 0)."""
    return sensitivity_percent(se_later_percent, se_peak_percent)


def regress_by_group(x, y, labels, confidence: float = 0.95) -> dict[str, LinearFit]:
    """One :func:`linear_regression` of ``y`` on ``x`` per label (per participant, tumour...)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    lab = np.asarray(labels, dtype=object).ravel()
    if not (x.shape == y.shape == lab.shape):
        raise ValueError(f"x, y and labels must have the same length ({x.size}, {y.size}, "
                         f"{lab.size})")
    out = {}
    for key in sorted({str(v) for v in lab if v is not None}):
        sel = np.array([str(v) == key for v in lab])
        out[key] = linear_regression(x[sel], y[sel], confidence)
    return out


#: The agent under study (dose escalation, peak and persistence sessions).
STUDY_AGENT = "AGuIX"
#: The clinical agent it is compared with (first session carrying it).
REFERENCE_AGENT = "Dotarem"
#: A healthy-tissue control is flagged when |mean SE| or |mean concentration| exceeds these.
#: 10 % is well above the SE noise of a control ROI and well below the 25 % mean SE of the lowest
#: dose; 0.01 mM (about 10 mg/L of AGuIX) is a third of the paper's lowest per-patient lesion mean
#: at 100 mg/kg and twice the pipeline's accuracy target on phantoms (0.005 mM).
CONTROL_SE_THRESHOLD_PERCENT = 10.0
CONTROL_CONC_THRESHOLD_MM = 0.01
#: RECIST 1.1 / RANO: a lesion is measurable from this longest diameter on (mm).
MEASURABLE_DIAMETER_MM = 10.0

#: Multiple of the control-region noise that a lesion value must exceed to count as quantified
#: (the usual 3-sigma limit of detection).
DETECTION_LIMIT_K = 3.0


def detection_limit(control_values, k: float = DETECTION_LIMIT_K) -> float:
    """Limit of detection from healthy-tissue control ROI means that should be zero.

    ``k * sqrt(mean(v**2))``: the root mean square of the control means (it counts both their
    spread and any offset, e.g. a registration or B1 bias) times ``k`` (3 by default). Same unit
    as the input; NaN without finite controls.
    """
    v = np.asarray(control_values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return _NAN
    return float(k * math.sqrt(float(np.mean(v * v))))


def inverse_variance_mean(values, stderrs) -> tuple[float, float]:
    """Inverse-variance weighted mean ``sum(v / s**2) / sum(1 / s**2)`` and its standard error
    ``1 / sqrt(sum(1 / s**2))`` over the pairs with finite ``v`` and finite ``s > 0``; (NaN, NaN)
    without any. The standard error treats the errors as independent (noise only)."""
    v = np.asarray(values, dtype=float).ravel()
    s = np.asarray(stderrs, dtype=float).ravel()
    ok = np.isfinite(v) & np.isfinite(s) & (s > 0)
    if not ok.any():
        return _NAN, _NAN
    w = 1.0 / s[ok] ** 2
    return float(np.sum(w * v[ok]) / np.sum(w)), float(1.0 / math.sqrt(float(np.sum(w))))


def detection_limit_of_mean(sd, n_voxels, k: float = DETECTION_LIMIT_K) -> float:
    """Limit of detection without control regions: ``k`` standard errors of the ROI's own mean,
    ``k * sd / sqrt(n_voxels)``; NaN when ``sd`` is not finite or there are no voxels."""
    sd, n = float(sd), float(n_voxels)
    if not (math.isfinite(sd) and n > 0):
        return _NAN
    return float(k * sd / math.sqrt(n))
