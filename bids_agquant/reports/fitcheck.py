"""Views of the VFA fit the pipeline does not write as maps: the B1+ factor, the fit residual
and the VFA images before and after their registration, all on the report's display grid.

Display only, computed from what was written or read by the run (nothing here changes a
number of the outputs):

* the VFA images (and the TB1map) of a state, read from BIDS_DIR as the plan names them, are
  brought onto the planes the report shows through the state's ``from-VFA_to-T1w`` transform
  (``xfm_vfa``), or by their scanner coordinates only ("before registration");
* the **B1+ factor** is the plan's TB1map times its scale (or the ``b1_factor`` output of a
  computed B1 method), shown where it was measured (the fit fills head voxels outside its field
  of view; those are not drawn);
* the **VFA residual** is the root-mean-square difference between the VFA signals and the SPGR
  signal predicted from the written M0 and T1 maps (and the B1+ factor the fit used), in percent
  of the mean signal over the flip angles. The maps were fitted in VFA space and resampled into
  the reference space, so at tissue edges the view mixes neighbouring voxels; inside tissue it
  is the fit's own residual (a written residual map would need a new output: not today).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_agquant.bids import derivatives as D
from bids_agquant.interfaces import geometry as G
from bids_agquant.qmri.spgr import spgr_signal

__all__ = ["VfaState", "vfa_states", "on_planes", "b1_on_planes", "residual_on_planes",
           "registration_pair"]

LOG = logging.getLogger("bids_agquant.reports")


@dataclass(frozen=True)
class VfaState:
    """A contrast state with a VFA set and its registered ``xfm_vfa`` transform."""
    session: str | None
    agent: str | None
    state: object                 # bids_agquant.bids.plan.ContrastState
    transform: Path               # the xfm_vfa output
    b1_factor: Path | None        # the b1_factor output (a computed B1 method), else None


def vfa_states(output_dir, participant: str, plan) -> list[VfaState]:
    """Every state of ``plan`` with a VFA set whose ``xfm_vfa`` transform is in the outputs."""
    if plan is None:
        return []
    found = D.list_outputs(output_dir, participant)
    out = []
    for st in plan.states:
        if st.vfa is None:
            continue
        agent = st.agent_label if st.is_post else None

        def one(key):
            return next((f.path for f in found if f.key == key
                         and f.entities.get("ses") == st.session
                         and f.entities.get("ce") == agent), None)
        xfm = one("xfm_vfa")
        if xfm is not None:
            out.append(VfaState(st.session, agent, st, xfm, one("b1_factor")))
    return out


def on_planes(data, affine, grid_shape, grid_affine, transform, planes, *,
              fill=np.nan) -> np.ndarray:
    """``data`` (on ``affine``) resampled (linear) onto the ``planes`` ``[(axis, index), ...]``
    of the grid ``(grid_shape, grid_affine)`` through ``transform`` (4x4 LPS, target <- source;
    None: scanner coordinates only), NaN elsewhere, ``fill`` outside the image: only what a
    figure shows is resampled (a whole 1 mm volume per image took about a second)."""
    shape = tuple(int(n) for n in grid_shape[:3])
    out = np.full(shape, np.nan, dtype=np.float32)
    for axis, index in planes:
        plane_shape = [1 if a == axis else n for a, n in enumerate(shape)]
        to_plane = np.eye(4)
        to_plane[axis, 3] = index
        where = tuple(slice(index, index + 1) if a == axis else slice(None) for a in range(3))
        out[where] = G.resample(data, affine, plane_shape, np.asarray(grid_affine) @ to_plane,
                                transform, order=1, fill=fill)
    return out


def _b1_used(state, output_dir: Path, participant: str) -> bool:
    """Whether the fit of ``state`` used a B1+ map: ``B1Correction`` of its T1map sidecar
    (unknown: when the plan names a map)."""
    for f in D.list_outputs(output_dir, participant):
        if (f.key == "T1map" and f.entities.get("ses") == state.session
                and f.entities.get("ce") == state.agent):
            side = D.read_sidecar(f.path)
            if isinstance(side, dict) and "B1Correction" in side:
                return bool(side["B1Correction"])
    return state.b1_factor is not None or state.state.vfa.b1map is not None


def b1_on_planes(state: VfaState, output_dir, participant, grid, planes):
    """The B1+ factor the fit of ``state`` used, on ``planes`` of ``grid`` (None: no map)."""
    vfa = state.state.vfa
    if not _b1_used(state, Path(output_dir), participant):
        return None
    if state.b1_factor is not None:
        path, scale = state.b1_factor, 1.0
    elif vfa.b1map is not None and vfa.b1_method == "TB1map":
        path, scale = Path(vfa.b1map), float(vfa.b1_scale)
    else:
        return None
    data, affine, _ = G.load(path)
    transform = G.read_transform(state.transform)
    return on_planes(data * scale, affine, grid.shape, grid.affine, transform, planes)


def registration_pair(state: VfaState, grid, planes) -> tuple[np.ndarray, np.ndarray]:
    """(before, after): the highest-flip-angle VFA image (the one registered to the T1w) on
    ``planes`` of ``grid`` by its scanner coordinates only, and through the ``xfm_vfa``
    transform."""
    data, affine, _ = G.load(state.state.vfa.files[-1])
    before = on_planes(data, affine, grid.shape, grid.affine, None, planes)
    after = on_planes(data, affine, grid.shape, grid.affine, G.read_transform(state.transform),
                      planes)
    return before, after


def residual_on_planes(state: VfaState, plan, m0, t1, b1, grid, planes) -> np.ndarray:
    """RMS residual of the VFA fit in % of the mean signal, on ``planes`` of ``grid``: the VFA
    signals (times the plan's intensity factors) against the SPGR signal of the ``m0`` and
    ``t1`` maps (display grid) with the B1+ factor ``b1`` (None: nominal flip angles; NaN where
    the fit used a filled value, which the view leaves out)."""
    vfa = state.state.vfa
    transform = G.read_transform(state.transform)
    signals = []
    for f in vfa.files:
        data, affine, _ = G.load(f)
        factor = plan.intensity_factor(f) if hasattr(plan, "intensity_factor") else 1.0
        signals.append(on_planes(data * factor, affine, grid.shape, grid.affine, transform,
                                 planes))
    shown = np.zeros(signals[0].shape, dtype=bool)      # the voxels of the planes only: the
    for axis, index in planes:                          # SPGR signal over a whole 1 mm volume
        shown[tuple(slice(index, index + 1) if a == axis else slice(None)  # took 2 s a state
                    for a in range(3))] = True
    observed = np.stack([s[shown] for s in signals], axis=-1).astype(np.float64)
    m0_s, t1_s = np.asarray(m0)[shown], np.asarray(t1)[shown]
    b1_s = None if b1 is None else np.asarray(b1)[shown]
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = spgr_signal(m0_s, t1_s, vfa.flip_angles_deg, vfa.tr_s, b1_s)
        rms = np.sqrt(np.mean((observed - predicted) ** 2, axis=-1))
        mean = np.mean(observed, axis=-1)
        res = 100.0 * rms / mean
    ok = np.isfinite(res) & (mean > 0) & np.isfinite(m0_s) & (t1_s > 0)
    out = np.full(shown.shape, np.nan, dtype=np.float32)
    out[shown] = np.where(ok, res, np.nan)
    return out
