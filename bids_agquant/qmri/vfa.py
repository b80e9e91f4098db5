"""Variable-flip-angle (VFA, DESPOT1) T1 mapping from spoiled gradient-echo signals.

``VFAModel(flip_angles_deg, tr_s, method).fit(signal, mask=None, b1=None)`` returns a
:class:`VFAFit` with ``t1`` (s), ``r1`` (1/s), ``m0`` (signal units), ``r2``, ``residual`` (rms,
signal units) and a boolean ``valid`` map, all of the signal's spatial shape (flip angles are on
the last axis of ``signal``; a 1-D signal is one voxel and gives 0-d results).

The model is :func:`bids_agquant.qmri.spgr.spgr_signal` with the actual flip angles from
:func:`bids_agquant.qmri.spgr.effective_flip_rad` (nominal angle x B1 factor).

Methods
-------
``"linear"``
    DESPOT1: ordinary least squares of ``S/sin(a')`` on ``S/tan(a')``; slope ``E1``, intercept
    ``M0 (1 - E1)``. Closed form, vectorised over voxels.
``"nonlinear"``
    Least squares of the signal itself over (M0, T1), vectorised over voxels with no per-voxel
    loop. Variable projection: the SPGR signal factorises as ``S_i = k * h_i(q)`` with
    ``q = 1 - E1``, ``k = M0 q``, ``h_i = sin a'_i / (d_i + q cos a'_i)`` and
    ``d_i = 1 - cos a'_i`` (this is the same equation as ``spgr_signal``, regrouped so that the
    linear amplitude can be profiled out). For fixed ``q`` the best ``k`` is ``(h.S)/(h.h)``, so
    the fit is a 1-D maximisation of ``psi(q) = log((h.S)^2 / (h.h))`` per voxel, solved by
    safeguarded Newton steps with analytic first and second derivatives (a step goes at most
    7/8 of the way to either end of (0, 1); a step that lowers ``psi`` is halved), started from
    the DESPOT1 solution (or a coarse grid where DESPOT1 fails). ``psi`` changes with the signal
    scale only by a constant, and every voxel is also divided by its largest signal, so the fit
    is invariant to signal scale (1e1 to 1e7 and beyond).

Failures are NaN (never a clipped number): ``E1 <= 0`` or ``E1 >= 1``, non-finite input, fewer
than two usable flip angles (non-finite samples and actual angles outside (0, 180) degrees are
dropped), an all-zero or non-positive-amplitude signal (``M0 <= 0``), a B1 factor that is not a
positive finite number, or (nonlinear) no convergence within the iteration budget. T1 is never
clipped to tissue bounds: post-contrast T1 of 0.1 s or less is returned as fitted.

No I/O, pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bids_agquant.qmri.spgr import effective_flip_rad, spgr_signal

__all__ = ["VFAModel", "VFAFit", "METHODS"]

METHODS = ("nonlinear", "linear")

# Voxels per block: the block's (n_flip, CHUNK) float64 work arrays stay in the CPU caches.
CHUNK = 16384
# Newton iteration budget and convergence tolerance (relative change of q = 1 - E1).
MAX_ITER = 60
Q_RTOL = 1e-10
# q outside [Q_MIN, Q_MAX] means E1 >= 1 or E1 <= 0 within float precision: the fit fails.
Q_MIN = 1e-12
Q_MAX = 1.0 - 1e-12
# A step may not lower psi by more than this (absolute, psi is a log): rounding noise allowance.
PSI_TOL = 1e-12
# Starting grid of q for voxels where DESPOT1 gives no usable start.
_Q_GRID = np.concatenate([np.geomspace(1e-5, 0.5, 40), 1.0 - np.geomspace(0.5, 1e-4, 16)[1:]])


@dataclass(frozen=True)
class VFAFit:
    """Result of :meth:`VFAModel.fit`; arrays have the spatial shape of the signal.

    Attributes
    ----------
    t1 : T1 in seconds (NaN where the fit failed or outside the mask).
    m0 : equilibrium signal M0 in the signal's units (NaN where invalid).
    r2 : coefficient of determination of the fitted SPGR curve against the signal (1 = perfect).
    residual : root-mean-square residual over the usable flip angles, signal units.
    valid : True where the fit succeeded.
    mask : the voxels that were fitted.
    """

    t1: np.ndarray
    m0: np.ndarray
    r2: np.ndarray
    residual: np.ndarray
    valid: np.ndarray
    mask: np.ndarray
    flip_angles_deg: np.ndarray
    tr_s: float
    b1: np.ndarray | float | None = None
    method: str = "nonlinear"
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def r1(self) -> np.ndarray:
        """R1 = 1/T1 in 1/s (NaN where invalid)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 / self.t1

    @property
    def n_failed(self) -> int:
        """Number of voxels inside the mask whose fit failed."""
        return int(np.count_nonzero(self.mask & ~self.valid))

    def predict(self) -> np.ndarray:
        """Fitted signal (spatial shape + (n_flip,)) from :func:`spgr_signal`; NaN if invalid."""
        return spgr_signal(self.m0, self.t1, self.flip_angles_deg, self.tr_s, self.b1)


class VFAModel:
    """VFA T1 model for one protocol.

    Parameters
    ----------
    flip_angles_deg : 1-D sequence of at least two nominal flip angles in degrees, in (0, 180).
    tr_s : repetition time in seconds (SPGR: milliseconds range, so it must be below 1 s).
    method : ``"nonlinear"`` (least squares on the signal, the reference) or ``"linear"``
        (DESPOT1, faster, biased at low SNR).
    """

    def __init__(self, flip_angles_deg, tr_s, method: str = "nonlinear"):
        fa = np.asarray(flip_angles_deg, dtype=np.float64)
        if fa.ndim != 1 or fa.size < 2:
            raise ValueError(f"flip_angles_deg must be a 1-D sequence of at least 2 angles, got "
                             f"{flip_angles_deg!r}")
        if not np.all(np.isfinite(fa)) or np.any(fa <= 0) or np.any(fa >= 180):
            raise ValueError(f"flip_angles_deg {fa.tolist()} must be finite degrees in (0, 180); "
                             f"convert radians with numpy.rad2deg")
        if np.unique(fa).size < 2:
            raise ValueError(f"flip_angles_deg {fa.tolist()} needs at least two different angles")
        try:
            tr = float(tr_s)
        except (TypeError, ValueError):
            raise ValueError(f"tr_s must be a number in seconds, got {tr_s!r}") from None
        if not np.isfinite(tr) or tr <= 0:
            raise ValueError(f"tr_s={tr_s!r} must be a positive repetition time in seconds")
        if tr >= 1.0:
            raise ValueError(f"tr_s={tr:g} s is not an SPGR repetition time; it looks like "
                             f"milliseconds: pass seconds (e.g. {tr / 1000:g})")
        if method not in METHODS:
            raise ValueError(f"method={method!r} is unknown; use one of {METHODS}")
        self.flip_angles_deg = fa
        self.tr_s = tr
        self.method = method

    def __repr__(self):
        return (f"VFAModel(flip_angles_deg={self.flip_angles_deg.tolist()}, tr_s={self.tr_s:g}, "
                f"method={self.method!r})")

    # ------------------------------------------------------------------ public
    def fit(self, signal, mask=None, b1=None) -> VFAFit:
        """Fit T1 and M0 voxel-wise.

        Parameters
        ----------
        signal : array (..., n_flip), any real dtype; flip angles on the last axis.
        mask : optional bool array of the spatial shape; voxels outside are NaN (not failures).
        b1 : optional multiplicative B1+ factor on the nominal flip angle: scalar or array
            broadcastable to the spatial shape (1 = nominal).
        """
        sig = self._check_signal(signal)
        spatial = sig.shape[:-1]
        n = int(np.prod(spatial, dtype=np.int64))
        flat = sig.reshape(n, self.flip_angles_deg.size)
        fit_mask = _fit_mask(mask, spatial)
        b1_out, b1_flat, b1_scalar = _b1_factors(b1, spatial, n)
        with np.errstate(all="ignore"):
            q, k, rss, sst, nused, scale, iters = self._fit_voxels(flat, fit_mask.reshape(n),
                                                                   b1_flat, b1_scalar)
            t1, m0, residual, r2, valid = self._to_t1_m0(q, k, rss, sst, nused, scale)
        return VFAFit(t1=t1.reshape(spatial), m0=m0.reshape(spatial), r2=r2.reshape(spatial),
                      residual=residual.reshape(spatial), valid=valid.reshape(spatial),
                      mask=fit_mask, flip_angles_deg=self.flip_angles_deg, tr_s=self.tr_s,
                      b1=b1_out, method=self.method, extra={"max_newton_iterations": iters})

    # ------------------------------------------------------------------ steps of fit
    def _check_signal(self, signal) -> np.ndarray:
        """The signal as an array with the flip angles on its last axis; raise if it is not one."""
        sig = np.asarray(signal)
        nf = self.flip_angles_deg.size
        if sig.ndim < 1 or sig.shape[-1] != nf:
            raise ValueError(f"signal has shape {sig.shape}; its last axis must hold the {nf} "
                             f"flip angles {self.flip_angles_deg.tolist()}")
        if not (np.issubdtype(sig.dtype, np.floating) or np.issubdtype(sig.dtype, np.integer)
                or sig.dtype == np.bool_):
            raise ValueError(f"signal must be a real numeric array, got dtype {sig.dtype}")
        return sig

    def _fit_voxels(self, flat, mflat, b1_flat, b1_scalar):
        """Fit the voxels inside the mask, CHUNK at a time: per voxel the SPGR parameters
        ``q``, ``k``, the residual and total sums of squares, the number of angles used and the
        signal scale (NaN outside the mask), and the most Newton iterations any chunk needed."""
        n = flat.shape[0]
        q = np.full(n, np.nan)
        k = np.full(n, np.nan)
        rss = np.full(n, np.nan)
        sst = np.full(n, np.nan)
        nused = np.zeros(n)
        scale = np.full(n, np.nan)
        sel = None if mflat.all() else np.flatnonzero(mflat)
        n_sel = n if sel is None else sel.size
        alpha_const = effective_flip_rad(self.flip_angles_deg, b1_scalar)  # (nf,)
        nonlinear = self.method == "nonlinear"
        iters = 0
        for start in range(0, n_sel, CHUNK):
            stop = min(start + CHUNK, n_sel)
            ix = slice(start, stop) if sel is None else sel[start:stop]
            block = flat[ix]
            bblock = None if b1_flat is None else b1_flat[ix]
            res = _fit_block(block, self.flip_angles_deg, alpha_const, bblock, nonlinear)
            q[ix], k[ix], rss[ix], sst[ix], nused[ix], scale[ix] = res[:6]
            iters = max(iters, res[6])
        return q, k, rss, sst, nused, scale, iters

    def _to_t1_m0(self, q, k, rss, sst, nused, scale):
        """T1, M0, RMS residual, R2 and validity from the fitted SPGR parameters; NaN where
        the fit is not a physical T1 and M0."""
        valid = np.isfinite(q) & (q > 0) & (q < 1) & np.isfinite(k) & (k > 0)
        t1 = np.where(valid, -self.tr_s / np.log1p(-q), np.nan)
        m0 = np.where(valid, k * scale / q, np.nan)
        valid &= np.isfinite(t1) & (t1 > 0) & np.isfinite(m0)
        t1[~valid] = np.nan
        m0[~valid] = np.nan
        residual = np.where(valid, np.sqrt(rss / nused) * scale, np.nan)
        r2 = np.where(valid, np.where(sst > 0, 1.0 - rss / sst, np.nan), np.nan)
        return t1, m0, residual, r2, valid


def _fit_mask(mask, spatial) -> np.ndarray:
    """The voxels to fit: every voxel without a mask, else the mask as bool (checked shape)."""
    if mask is None:
        return np.ones(spatial, dtype=bool)
    m = np.asarray(mask)
    if m.shape != spatial:
        raise ValueError(f"mask has shape {m.shape}, expected the signal's spatial shape "
                         f"{spatial}")
    return m.astype(bool)


def _b1_factors(b1, spatial, n):
    """The B1+ factor as given back in the fit (``b1_out``), and as the kernels take it: one
    valid factor for every voxel (``b1_scalar``), or per-voxel factors, flattened (``b1_flat``);
    both None without B1. An invalid scalar becomes per-voxel factors, so every voxel fails."""
    b1_out = None
    b1_flat = None
    b1_scalar = None
    if b1 is not None:
        b = np.asarray(b1, dtype=np.float64)
        if b.ndim == 0:
            b1_out = float(b)
            if np.isfinite(b) and b > 0:
                b1_scalar = float(b)
            else:        # invalid everywhere: the per-voxel path marks every voxel failed
                b1_flat = np.full(n, float(b))
        else:
            try:
                b = np.broadcast_to(b, spatial)
            except ValueError:
                raise ValueError(f"b1 has shape {b.shape}, not broadcastable to the signal's "
                                 f"spatial shape {spatial}") from None
            b1_out = np.array(b)
            b1_flat = b1_out.reshape(n)
    return b1_out, b1_flat, b1_scalar


# ---------------------------------------------------------------------- kernels
def _fit_block(block, fa_deg, alpha_const, b, nonlinear):
    """Fit one block of voxels. ``block`` is (m, nf); ``b`` None or (m,) B1 factors.

    Returns q, k (amplitude of the normalised signal, = M0 q / scale), rss and sst (of the
    normalised signal), number of usable angles, per-voxel scale, Newton iterations used.
    """
    S = np.array(block.T, dtype=np.float64, order="C")  # (nf, m): contiguous per flip angle
    nf, m = S.shape
    if b is None:
        theta = alpha_const[:, None]                      # (nf, 1), shared by all voxels
        bad_voxel = np.zeros(m, dtype=bool)
        in_range = bool(np.all((theta > 0) & (theta < np.pi)))
    else:
        theta = np.ascontiguousarray(effective_flip_rad(fa_deg, b).T)  # (nf, m)
        bad_voxel = ~(np.isfinite(b) & (b > 0))
        # every actual angle in (0, pi)? (min/max are NaN if any b is NaN -> False)
        in_range = bool(m == 0 or (b.min() > 0 and b.max() * alpha_const.max() < np.pi))
    s, c, d = _sin_cos_versin(theta, in_range)
    ok = np.isfinite(S)
    weighted = not ok.all()
    if not in_range:
        angle_ok = (s > 0) & np.isfinite(s)  # actual angle within (0, 180) degrees
        weighted = True
    else:
        angle_ok = True
    if weighted:
        ok = ok & angle_ok
        S = np.where(ok, S, 0.0)
        s = np.where(ok, s, 0.0)
        c = np.where(ok, c, 0.0)
        d = np.where(ok, d, 1.0)
        n_ok = ok.sum(axis=0).astype(np.float64)
    else:
        n_ok = np.full(m, float(nf))

    scale = np.abs(S).max(axis=0)
    bad_voxel |= (n_ok < 2) | ~(scale > 0) | ~np.isfinite(scale)
    scale[bad_voxel] = 1.0
    S /= scale  # (division, not a reciprocal: subnormal scales stay finite)

    # DESPOT1: y = S / sin a', x = S / tan a' = y cos a'; slope E1, intercept M0 (1 - E1) = k.
    y = S / np.where(s > 0, s, 1.0) if weighted else S / s
    x = y * c
    xm = x.sum(axis=0) / n_ok
    ym = y.sum(axis=0) / n_ok
    xc = x - xm
    if weighted:
        xc *= ok
    sxx = np.einsum("ij,ij->j", xc, xc)
    e1 = np.einsum("ij,ij->j", xc, y) / sxx
    k_lin = ym - e1 * xm
    q = 1.0 - e1
    q[bad_voxel | ~(sxx > 0)] = np.nan
    iters = 0
    if nonlinear:
        q, iters = _newton_vp(S, s, c, d, q, bad_voxel)
        k = None
    else:
        k = k_lin
    q, k, rss, sst = _final(S, s, c, d, q, k, n_ok, ok if weighted else None)
    return q, k, rss, sst, n_ok, scale, iters


def _sin_cos_versin(theta, in_range=False):
    """sin, cos and 1 - cos of the actual flip angles with one transcendental call.

    From t = sin(theta/2): 1 - cos = 2 t^2 (no cancellation at small angles), cos = 1 - 2 t^2,
    sin = 2 t cos(theta/2) with cos(theta/2) = sqrt(1 - t^2) >= 0 for theta in [0, pi].
    Angles outside (0, pi) give sin <= 0 or NaN and are dropped by the caller.
    """
    t = np.sin(0.5 * theta)
    d = t * t
    half_cos = np.sqrt(1.0 - d)
    d *= 2.0
    c = 1.0 - d
    s = t * half_cos
    s *= 2.0
    if in_range:
        return s, c, d
    # outside [0, pi] the half-angle cosine is negative: recover the true sign of sin
    outside = ~((theta >= 0) & (theta <= np.pi))
    if outside.any():
        s = np.where(outside, np.sin(theta), s)
    return s, c, d


def _per_voxel(a, idx):
    """Columns ``idx`` of a (nf, m) array; (nf, 1) broadcast arrays are shared."""
    return a if a.shape[1] == 1 else a[:, idx]


def _psi_derivs(q, S, s, c, d):
    """psi(q) = log((h.S)^2/(h.h)) and its first two derivatives in q, per voxel.

    h_i = s_i u_i with u_i = 1/(d_i + q c_i) and v_i = c_i u_i: dh/dq = -h v, d2h/dq2 = 2 h v^2.
    With A = h.S and B = h.h: A' = -sum(hSv), A'' = 2 sum(hSv^2), B' = -2 sum(h^2 v),
    B'' = 2 (sum((h v)^2) + sum(h 2 h v^2)) = 6 sum(h^2 v^2).
    """
    u = c * q
    u += d
    np.reciprocal(u, out=u)
    h = s * u
    v = c * u
    hs = h * S
    h *= h                                  # h^2
    A = hs.sum(axis=0)
    hs *= v
    Ap = hs.sum(axis=0)                     # -A'
    App = np.einsum("ij,ij->j", hs, v)      # A''/2
    B = h.sum(axis=0)
    h *= v
    Bp = h.sum(axis=0)                      # -B'/2
    C = np.einsum("ij,ij->j", h, v)         # B''/6
    psi = 2.0 * np.log(A) - np.log(B)        # NaN where A <= 0 (negative amplitude)
    a1 = Ap / A
    b1 = Bp / B
    g = 2.0 * (b1 - a1)                                   # 2A'/A - B'/B
    hess = 4.0 * App / A - 2.0 * a1 * a1 - 6.0 * C / B + 4.0 * b1 * b1
    return psi, g, hess


def _grid_start(S, s, c, d):
    """Best q on a coarse grid (for voxels where DESPOT1 gives no start in (0, 1))."""
    best = np.full(S.shape[1], -np.inf)
    qbest = np.full(S.shape[1], np.nan)
    for qg in _Q_GRID:
        h = s / (d + qg * c)
        A = np.einsum("ij,ij->j", h, S)
        B = np.einsum("ij,ij->j", h, h)
        psi = 2.0 * np.log(A) - np.log(B)
        better = psi > best
        best[better] = psi[better]
        qbest[better] = qg
    return qbest


def _newton_vp(S, s, c, d, q0, bad_voxel):
    """Safeguarded Newton maximisation of psi(q) for every voxel; returns q (NaN on failure)."""
    m = S.shape[1]
    q_out = np.full(m, np.nan)
    start_ok = np.isfinite(q0) & (q0 > Q_MIN) & (q0 < Q_MAX)
    need_grid = ~start_ok & ~bad_voxel
    q0 = q0.copy()
    if need_grid.any():
        gi = np.flatnonzero(need_grid)
        q0[gi] = _grid_start(S[:, gi], _per_voxel(s, gi), _per_voxel(c, gi), _per_voxel(d, gi))
    active = np.flatnonzero(~bad_voxel & np.isfinite(q0))
    if active.size == 0:
        return q_out, 0
    if active.size == m:
        Sa, sa, ca, da = S, s, c, d
    else:
        Sa, sa, ca, da = (S[:, active], _per_voxel(s, active), _per_voxel(c, active),
                          _per_voxel(d, active))
    q = q0[active]
    q_acc = q.copy()
    psi_acc = np.full(q.size, -np.inf)
    live = np.ones(q.size, dtype=bool)  # not yet converged or failed
    n_live = q.size
    it = 0
    for it in range(1, MAX_ITER + 1):
        psi, g, hess = _psi_derivs(q, Sa, sa, ca, da)
        acc = psi >= psi_acc - PSI_TOL                      # False for NaN psi
        step = g / hess
        np.negative(step, out=step)
        flat = ~(hess < 0)                                  # not concave here: fixed-size step
        if flat.any():
            step[flat] = np.where(g[flat] > 0, q[flat], -0.5 * q[flat])
        lo = -0.875 * q
        hi = 0.875 * (1.0 - q)
        # a clipped or non-Newton step is never "converged" (else a boundary would look optimal)
        newton = ~flat & (step > lo) & (step < hi)
        np.clip(step, lo, hi, out=step)
        q_next = q + step
        rej = ~acc
        if rej.any():                                       # step lowered psi: halve it
            q_next[rej] = 0.5 * (q[rej] + q_acc[rej])
        np.copyto(q_acc, q, where=acc)
        np.copyto(psi_acc, psi, where=acc)
        conv = acc & newton & (np.abs(step) <= Q_RTOL * q)
        fail = ~((q_next >= Q_MIN) & (q_next <= Q_MAX))    # also catches NaN
        fail |= np.isinf(psi_acc)                           # no valid point yet (A <= 0)
        conv &= ~fail
        done = (conv | fail) & live
        q = q_next
        if done.any():
            newly = done & conv
            q_out[active[newly]] = q[newly]
            live &= ~done
            n_live = np.count_nonzero(live)
            if n_live == 0:
                break
            if n_live < 0.75 * live.size:                   # compact the work arrays
                active = active[live]
                q, q_acc, psi_acc = q[live], q_acc[live], psi_acc[live]
                Sa, sa, ca, da = (Sa[:, live], _per_voxel(sa, live), _per_voxel(ca, live),
                                  _per_voxel(da, live))
                live = np.ones(q.size, dtype=bool)
    return q_out, it


def _final(S, s, c, d, q, k, n_ok, ok):
    """Amplitude (if not given), residual sum of squares and total sum of squares at q."""
    h = s / (d + q * c)
    if k is None:
        k = np.einsum("ij,ij->j", h, S) / np.einsum("ij,ij->j", h, h)
    r = S - k * h
    rss = np.einsum("ij,ij->j", r, r)
    dev = S - S.sum(axis=0) / n_ok
    if ok is not None:
        dev *= ok
    sst = np.einsum("ij,ij->j", dev, dev)
    bad = ~np.isfinite(q)
    k = np.where(bad, np.nan, k)
    return q, k, rss, sst
