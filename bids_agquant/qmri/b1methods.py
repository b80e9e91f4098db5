"""B1+ factor maps from the images of other B1 mapping methods (pure numpy, no I/O).

The BIDS qMRI appendix (bids-specification ``src/appendices/qmri.md``, "Field maps" and the
``TB1EPI`` / ``TB1AFI`` / ``TB1TFL`` and ``TB1RFM`` notes) names the file collections of each
method; :data:`METHODS` is the one home of what this package reads for each of them (suffix, the
entity telling the images apart, the sidecar fields needed), used by the dataset reader
(``bids/layout.py``), the validation (``bids/validate.py``), the simulator and the docs. Each
function below maps the method's images (arrays on one grid) and protocol values (floats) to a
multiplicative B1+ factor (1 = nominal flip angle); NaN where the factor is undefined (no signal,
a ratio out of range, the background). A ``TB1map`` is already a factor (or percent) and is read
as is (``bids/validate.py`` ``b1_scale``).

``TB1AFI`` (actual flip-angle imaging; Yarnykh, MRM 57:192, 2007): two interleaved SPGR
    acquisitions with TR1 < TR2 (``acq-tr1``, ``acq-tr2``), r = S2 / S1, n = TR2 / TR1,
    alpha = arccos((r n - 1) / (n - r)), factor = alpha / alpha_nominal. Valid for TR1, TR2 << T1
    (the first-order expansion of the exact steady state, :func:`afi_signals`); the same form is
    used by the hMRI toolbox (``hmri_create_b1map.m``, ``calc_AFI_b1map``).
``TB1DAM`` (double angle; Insko and Bolinger, JMR A 103:82, 1993): images at alpha
    (``flip-1``) and 2 alpha (``flip-2``) with full relaxation (TR >= 5 T1): S2 / S1 =
    sin(2 a) / sin(a) = 2 cos(a), so a = arccos(S2 / (2 S1)).
``TB1TFL`` (Siemens ``tfl_b1map``; Chung et al., MRM 64:439, 2010): ``acq-famp`` holds the actual
    flip angle in degrees x 10, the nominal flip angle is the ``FlipAngle`` of its sidecar:
    factor = famp / (10 alpha_nominal). The x10 convention and the nominal from the famp sidecar
    are those of the hMRI toolbox (``hmri_create_b1map.m``, ``calc_tfl_b1map``: "a flip angle map
    (multiplied by 10)", ``B1map_norm = abs(Vol1)*10/alphanom`` in percent).
``TB1RFM`` (Siemens ``rf_map``): ``acq-famp`` is not scaled like the tfl map. The hMRI toolbox
    (``calc_rf_map``) reads it as an actual flip angle of (famp - 2048) x 180 / 2048 degrees for a
    nominal 90 degrees (:data:`RFM_OFFSET`, :data:`RFM_NOMINAL_DEG`); that reading is used here.
``TB1EPI`` (3D EPI spin echo and stimulated echo; Jiru and Klose, MRM 56:1375, 2006; Lutti et
    al., MRM 64:229, 2010 and PLoS One 7:e32379, 2012): per nominal flip angle beta (the
    ``FlipAngle`` of the STE pulse, pulses alpha-2alpha-alpha), echo-1 is the spin echo (SE),
    echo-2 the stimulated echo (STE); STE / SE = cos(alpha) exp(-TM / T1) with TM the
    ``MixingTime``. As in the hMRI toolbox (``calc_SESTE_b1map``): alpha = arccos(exp(TM / T1)
    STE / SE) with an assumed T1 (:data:`EPI_ASSUMED_T1_S`, its 3 T default); magnitude images
    cannot tell alpha from 180 - alpha, so each flip angle gives two candidate factors; per voxel
    the :data:`EPI_N_BEST` flip angles with the largest SE signal are kept and the factor is the
    mean of the :data:`EPI_N_BEST` consecutive sorted candidates that agree best (smallest
    standard deviation). Left out (hMRI does them): the EPI distortion correction with a B0 map
    (the map is used on its own, distorted, grid), the masking and padding, the 8 mm smoothing;
    T2 decay between the two echoes is not modelled (as in hMRI).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Role", "B1Method", "METHODS", "COMPUTED_METHODS", "READ_METHOD",
           "afi_factor", "dam_factor", "tfl_factor", "rfm_factor", "epi_factor", "factor_map",
           "images_by_role",
           "afi_signals", "dam_signals", "tfl_famp", "rfm_famp", "epi_signals",
           "RFM_OFFSET", "RFM_NOMINAL_DEG", "EPI_ASSUMED_T1_S", "EPI_N_BEST", "DAM_RATIO_TOL"]

#: Siemens rf_map: stored value of a zero flip angle, and stored units per 180 degrees.
RFM_OFFSET = 2048.0
#: Siemens rf_map: the nominal flip angle the famp image refers to (hMRI ``calc_rf_map``).
RFM_NOMINAL_DEG = 90.0
#: T1 (s) assumed for the STE decay during the mixing time (hMRI default at 3 T, 1192 ms).
EPI_ASSUMED_T1_S = 1.192
#: TB1EPI: flip angles kept per voxel (largest SE signal) and candidates averaged (hMRI: 5).
EPI_N_BEST = 5
#: TB1DAM: FlipAngle of flip-2 must be twice that of flip-1 within this relative tolerance.
DAM_RATIO_TOL = 0.01


@dataclass(frozen=True)
class Role:
    """One image of a method's file collection: the entity (pybids name) and the label (for
    ``acquisition``: the label's prefix; freeform text may follow) that identify it, and the
    sidecar fields it must give."""
    name: str
    entity: str
    label: str
    metadata: tuple[str, ...] = ()


@dataclass(frozen=True)
class B1Method:
    """A B1 mapping method read from ``fmap/``: its BIDS suffix and the images it needs.

    ``per_flip``: the roles repeat for each ``flip-<index>`` (TB1EPI)."""
    suffix: str
    title: str
    roles: tuple[Role, ...]
    reference: str
    per_flip: bool = False

    @property
    def entities(self) -> tuple[str, ...]:
        """The entities that tell the images of one collection apart."""
        return tuple(dict.fromkeys([r.entity for r in self.roles]
                                   + (["flip"] if self.per_flip else [])))


#: The B1 map already computed (a factor or percent map): read, not computed.
READ_METHOD = "TB1map"

METHODS: dict[str, B1Method] = {m.suffix: m for m in (
    B1Method("TB1AFI", "actual flip-angle imaging",
             (Role("tr1", "acquisition", "tr1", ("RepetitionTime", "FlipAngle")),
              Role("tr2", "acquisition", "tr2", ("RepetitionTime",))),
             "Yarnykh, MRM 57:192 (2007)"),
    B1Method("TB1DAM", "double angle",
             (Role("alpha", "flip", "1", ("FlipAngle",)),
              Role("2alpha", "flip", "2", ("FlipAngle",))),
             "Insko and Bolinger, JMR A 103:82 (1993)"),
    B1Method("TB1TFL", "Siemens tfl_b1map",
             (Role("anat", "acquisition", "anat"),
              Role("famp", "acquisition", "famp", ("FlipAngle",))),
             "Chung et al., MRM 64:439 (2010); hMRI toolbox calc_tfl_b1map"),
    B1Method("TB1RFM", "Siemens rf_map",
             (Role("anat", "acquisition", "anat"), Role("famp", "acquisition", "famp")),
             "hMRI toolbox calc_rf_map"),
    B1Method("TB1EPI", "3D EPI spin echo / stimulated echo",
             (Role("se", "echo", "1", ("FlipAngle", "MixingTime")),
              Role("ste", "echo", "2", ("FlipAngle", "MixingTime"))),
             "Jiru and Klose, MRM 56:1375 (2006); Lutti et al., MRM 64:229 (2010); hMRI "
             "toolbox calc_SESTE_b1map", per_flip=True),
)}
#: Every B1 fmap suffix computed into a factor map, in the order they are preferred.
COMPUTED_METHODS = tuple(METHODS)


def _ratio(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((num > 0) & (den > 0) & np.isfinite(num) & np.isfinite(den),
                        num / den, np.nan)


def _arccos_deg(c):
    """arccos in degrees; NaN outside [-1, 1] (no flip angle explains the ratio)."""
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(c) <= 1.0, np.degrees(np.arccos(np.clip(c, -1.0, 1.0))), np.nan)


def _positive_factor(alpha_deg, nominal_deg):
    with np.errstate(invalid="ignore"):
        f = np.asarray(alpha_deg, dtype=np.float64) / float(nominal_deg)
        return np.where(f > 0, f, np.nan)


# ---------------------------------------------------------------------------------------------
# factor maps


def afi_factor(s_tr1, s_tr2, tr1_s: float, tr2_s: float, flip_angle_deg: float) -> np.ndarray:
    """AFI: alpha = arccos((r n - 1) / (n - r)), r = S2 / S1, n = TR2 / TR1 (Yarnykh 2007).

    NaN where a signal is not positive, or where r > 1 (no flip angle gives it)."""
    n = float(tr2_s) / float(tr1_s)
    r = _ratio(s_tr2, s_tr1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (r * n - 1.0) / (n - r)
    return _positive_factor(_arccos_deg(np.where(r <= 1.0, c, np.nan)), flip_angle_deg)


def dam_factor(s_alpha, s_2alpha, flip_angle_deg: float) -> np.ndarray:
    """Double angle: alpha = arccos(S(2 alpha) / (2 S(alpha))) (magnitude images: alpha < 90)."""
    return _positive_factor(_arccos_deg(_ratio(s_2alpha, s_alpha) / 2.0), flip_angle_deg)


def tfl_factor(famp, flip_angle_deg: float) -> np.ndarray:
    """Siemens tfl_b1map: famp = actual flip angle in degrees x 10; factor = famp / (10 alpha)."""
    f = np.asarray(famp, dtype=np.float64) / (10.0 * float(flip_angle_deg))
    return np.where(np.isfinite(f) & (f > 0), f, np.nan)


def rfm_factor(famp) -> np.ndarray:
    """Siemens rf_map: actual flip angle (famp - 2048) x 180 / 2048 degrees over a nominal 90."""
    alpha = (np.asarray(famp, dtype=np.float64) - RFM_OFFSET) * 180.0 / RFM_OFFSET
    return _positive_factor(np.where(np.isfinite(alpha), alpha, np.nan), RFM_NOMINAL_DEG)


def epi_factor(se, ste, flip_angles_deg, mixing_time_s: float,
               t1_s: float = EPI_ASSUMED_T1_S, n_best: int = EPI_N_BEST) -> np.ndarray:
    """3D EPI SE/STE: per flip angle beta_i (first axis of ``se``/``ste``), a_i =
    arccos(exp(TM / T1) STE / SE); candidates a_i / beta_i and (180 - a_i) / beta_i; per voxel
    the ``n_best`` flip angles with the largest SE are kept and the factor is the mean of the
    ``n_best`` consecutive sorted candidates with the smallest standard deviation."""
    se = np.asarray(se, dtype=np.float64)
    ste = np.asarray(ste, dtype=np.float64)
    beta = np.asarray(flip_angles_deg, dtype=np.float64).reshape((-1,) + (1,) * (se.ndim - 1))
    k = int(min(n_best, se.shape[0]))
    a = _arccos_deg(np.minimum(np.exp(mixing_time_s / t1_s) * _ratio(ste, se), 1.0))
    cand = np.concatenate([a / beta, (180.0 - a) / beta], axis=0)       # (2 n, ...)
    se_rank = np.where(np.isfinite(a), np.nan_to_num(se, nan=-np.inf), -np.inf)
    keep = np.argsort(-se_rank, axis=0, kind="stable")[:k]
    usable = np.take_along_axis(np.isfinite(a), keep, axis=0).all(axis=0)
    picked = np.concatenate([np.take_along_axis(cand[:se.shape[0]], keep, axis=0),
                             np.take_along_axis(cand[se.shape[0]:], keep, axis=0)], axis=0)
    picked = np.sort(np.where(np.isfinite(picked), picked, np.inf), axis=0)
    windows = np.stack([picked[i:i + k] for i in range(k + 1)], axis=0)  # (k + 1, k, ...)
    with np.errstate(invalid="ignore"):
        spread = np.where(np.isfinite(windows).all(axis=1), windows.std(axis=1), np.inf)
        best = np.argmin(spread, axis=0)[None]
        mean = np.take_along_axis(windows.mean(axis=1), best, axis=0)[0]
    return np.where(usable & np.isfinite(mean) & (mean > 0), mean, np.nan)


def images_by_role(method: str, roles, arrays) -> dict:
    """``{role: array}`` of a collection's images listed with their roles (for a method whose
    roles repeat per flip angle: ``{role: (n_flip, ...) stack}``, in the order listed)."""
    grouped: dict[str, list] = {}
    for role, arr in zip(roles, arrays):
        grouped.setdefault(role, []).append(np.asarray(arr, dtype=np.float64))
    if METHODS[method].per_flip:
        return {role: np.stack(items, axis=0) for role, items in grouped.items()}
    return {role: items[0] for role, items in grouped.items()}


def factor_map(method: str, images: dict, params: dict) -> np.ndarray:
    """The B1+ factor of ``method`` from its images (``{role: array}``; TB1EPI: ``{role: (n_flip,
    ...) array}``, flip angles in ``params["flip_angles_deg"]``) and protocol values."""
    if method == "TB1AFI":
        return afi_factor(images["tr1"], images["tr2"], params["tr1_s"], params["tr2_s"],
                          params["flip_angle_deg"])
    if method == "TB1DAM":
        return dam_factor(images["alpha"], images["2alpha"], params["flip_angle_deg"])
    if method == "TB1TFL":
        return tfl_factor(images["famp"], params["flip_angle_deg"])
    if method == "TB1RFM":
        return rfm_factor(images["famp"])
    if method == "TB1EPI":
        return epi_factor(images["se"], images["ste"], params["flip_angles_deg"],
                          params["mixing_time_s"])
    raise KeyError(f"{method}: not a computed B1 method ({', '.join(COMPUTED_METHODS)})")


# ---------------------------------------------------------------------------------------------
# signal models (the simulator writes these; the tests invert them)


def afi_signals(m0, t1_s, flip_angle_deg: float, tr1_s: float, tr2_s: float, b1):
    """Exact AFI steady state with ideal spoiling (Yarnykh 2007, eq. 2): (S1, S2) with
    S1 = M0 sin a (1 - E2 + (1 - E1) E2 cos a) / (1 - E1 E2 cos^2 a) and S2 the same with
    E1 and E2 swapped, E_i = exp(-TR_i / T1)."""
    a = np.radians(float(flip_angle_deg)) * np.asarray(b1, dtype=np.float64)
    t1 = np.asarray(t1_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e1, e2 = np.exp(-tr1_s / t1), np.exp(-tr2_s / t1)
        den = 1.0 - e1 * e2 * np.cos(a) ** 2
        s1 = m0 * np.sin(a) * (1.0 - e2 + (1.0 - e1) * e2 * np.cos(a)) / den
        s2 = m0 * np.sin(a) * (1.0 - e1 + (1.0 - e2) * e1 * np.cos(a)) / den
    return s1, s2


def dam_signals(m0, t1_s, flip_angle_deg: float, tr_s: float, b1):
    """Double-angle images at alpha and 2 alpha: spoiled steady state of repetition time
    ``tr_s`` (full relaxation, the method's assumption, as TR / T1 grows)."""
    a = np.radians(float(flip_angle_deg)) * np.asarray(b1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.exp(-float(tr_s) / np.asarray(t1_s, dtype=np.float64))
        return tuple(m0 * np.sin(x) * (1.0 - e) / (1.0 - e * np.cos(x)) for x in (a, 2 * a))


def tfl_famp(flip_angle_deg: float, b1):
    """The tfl_b1map famp image: 10 x the actual flip angle in degrees."""
    return 10.0 * float(flip_angle_deg) * np.asarray(b1, dtype=np.float64)


def rfm_famp(b1):
    """The rf_map famp image: 2048 + actual flip angle x 2048 / 180 (nominal 90 degrees)."""
    return RFM_OFFSET + RFM_NOMINAL_DEG * np.asarray(b1, dtype=np.float64) * RFM_OFFSET / 180.0


def epi_signals(m0, t1_s, flip_angles_deg, mixing_time_s: float, b1):
    """SE and STE magnitudes (first axis: flip angle) of alpha-2alpha-alpha with alpha = b1 beta:
    SE = M0 sin^3(alpha), STE = M0 sin^3(alpha) |cos(alpha)| exp(-TM / T1) (T2 decay and the
    EPI readout left out)."""
    beta = np.asarray(flip_angles_deg, dtype=np.float64)
    b1 = np.asarray(b1, dtype=np.float64)
    a = np.radians(beta.reshape((-1,) + (1,) * b1.ndim)) * b1
    se = np.abs(m0 * np.sin(a) ** 3)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        decay = np.exp(-mixing_time_s / np.asarray(t1_s, dtype=np.float64))
    return se, se * np.abs(np.cos(a)) * decay
