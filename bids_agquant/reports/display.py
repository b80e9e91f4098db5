"""How the participant report draws a map: colour ranges, colour maps, outlines, orientation.

One home for every display fact. The colour range of a quantity is the same in every row of a
figure that shows one contrast agent (day 8 is drawn on day 1's scale, so a faint uptake looks
faint); it depends on the agent where the agent changes the expected values (a clinical dose of
a Gd chelate enhances more than the nanoparticle). The report captions and ``docs/report.md``
are generated from :data:`RANGES` (:func:`range_text`, :func:`ranges_markdown`; a test checks
the docs against it).

Orientation labels are read from the affine of the displayed grid
(:func:`plane_labels`), never assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bids_agquant.qmri.relaxivity import canonical_agent

__all__ = ["Scale", "Range", "RANGES", "QUANTITIES", "scale_for", "range_text", "ranges_markdown",
           "OUTLINES", "outline_text", "PLANES", "plane_labels", "ANY_AGENT", "PRE"]

#: Agent key of a range that applies to every agent not listed for the quantity.
ANY_AGENT = "*"
#: Agent key of a pre-contrast state.
PRE = "pre"


@dataclass(frozen=True)
class Scale:
    """Colour scale of one quantity (and agent): ``vmin``-``vmax`` in ``unit``."""
    vmin: float
    vmax: float
    cmap: str
    unit: str


@dataclass(frozen=True)
class Quantity:
    """A displayed quantity: title, unit, colour map."""
    title: str
    unit: str
    cmap: str


class Range(NamedTuple):
    """A colour range and why it is what it is."""
    vmin: float
    vmax: float
    why: str


#: The displayed quantities (keys are output-registry keys where the map is an output; ``b1``
#: and ``vfa_residual`` are computed for display, see bids_agquant.reports.fitcheck).
QUANTITIES: dict[str, Quantity] = {
    "T1map": Quantity("T1", "s", "magma_r"),
    "delta_r1": Quantity("\u0394R1", "1/s", "cividis"),
    "enhancement": Quantity("SE", "%", "inferno"),
    "concentration": Quantity("[Gd]", "mM", "viridis"),
    "b1": Quantity("B1+", "factor", "RdBu_r"),
    "vfa_residual": Quantity("VFA residual", "% of signal", "plasma"),
}

#: Colour ranges per quantity and agent (canonical relaxivity-registry name, :data:`PRE` for
#: pre-contrast, :data:`ANY_AGENT` for the others). Day 1 of the paper's 100 mg/kg patients
#: stays inside the AGuIX ranges, so day 8 shows how much of it is left.
RANGES: dict[str, dict[str, Range]] = {
    "T1map": {ANY_AGENT: Range(0.0, 2.5, "white matter 0.8-1.1 s, grey matter 1.2-1.6 s at 3 T; "
                                         "CSF (about 4 s) saturates")},
    "delta_r1": {"AGuIX": Range(0.0, 0.8, "about r1 times the AGuIX [Gd] range"),
                 ANY_AGENT: Range(0.0, 1.5, "about r1 times the [Gd] range of the other "
                                            "agents")},
    "enhancement": {"AGuIX": Range(0.0, 150.0, "paper: mean SE 26 % at 15 mg/kg to 120 % at "
                                               "100 mg/kg on day 1"),
                    ANY_AGENT: Range(0.0, 300.0, "paper: Dotarem 183 \u00b1 116 % over "
                                                 "measurable lesions")},
    "concentration": {"AGuIX": Range(0.0, 0.08, "paper: 20-58 mg/L (about 0.02-0.06 mM Gd) on "
                                                "day 1 at 100 mg/kg"),
                      ANY_AGENT: Range(0.0, 0.4, "a clinical dose of a Gd chelate: tenths of "
                                                 "a mM in enhancing lesions")},
    "b1": {ANY_AGENT: Range(0.7, 1.3, "\u00b130 % at 3 T, centred on the nominal 1")},
    "vfa_residual": {ANY_AGENT: Range(0.0, 10.0, "a good fit stays within a few percent (the "
                                                 "noise); edges and CSF are higher")},
}


def _agent_key(quantity: str, agent: str | None) -> str:
    ranges = RANGES[quantity]
    name = PRE if not agent else (canonical_agent(agent) or agent)
    return name if name in ranges else ANY_AGENT


def scale_for(quantity: str, agent: str | None) -> Scale:
    """The colour scale of ``quantity`` for a state with contrast ``agent`` (None: pre)."""
    q = QUANTITIES[quantity]
    vmin, vmax, _ = RANGES[quantity][_agent_key(quantity, agent)]
    return Scale(vmin, vmax, q.cmap, q.unit)


def _num(v: float) -> str:
    return f"{v:g}"


def range_text(quantity: str, agents=None) -> str:
    """``"SE 0-150 % (AGuIX), 0-300 % (other agents)"``: the ranges of ``quantity``; with
    ``agents`` (the states' agents, None for pre-contrast) only theirs, named by them."""
    q = QUANTITIES[quantity]
    ranges = RANGES[quantity]
    if agents is None:
        named = {k: ("other agents" if k == ANY_AGENT else
                     "pre-contrast" if k == PRE else k) for k in ranges}
    else:
        named = {}
        for a in agents:
            who = "pre-contrast" if not a else (canonical_agent(a) or a)
            named.setdefault(_agent_key(quantity, a), [])
            if who not in named[_agent_key(quantity, a)]:
                named[_agent_key(quantity, a)].append(who)
        named = {k: ", ".join(v) for k, v in named.items()}
    parts = []
    for k, who in named.items():
        lo, hi, _ = ranges[k]
        parts.append(f"{_num(lo)}\u2013{_num(hi)} {q.unit}" + (f" ({who})" if len(named) > 1
                                                                or agents is not None and len(ranges) > 1 else ""))
    return f"{q.title} " + ", ".join(parts)


def ranges_markdown() -> str:
    """The Markdown table of every colour range (the block of ``docs/report.md``)."""
    lines = ["| quantity | agent | colour range | colour map | why |",
             "|---|---|---|---|---|"]
    for key, ranges in RANGES.items():
        q = QUANTITIES[key]
        for agent, (lo, hi, why) in ranges.items():
            who = {ANY_AGENT: "any" if len(ranges) == 1 else "any other",
                   PRE: "pre-contrast"}.get(agent, agent)
            lines.append(f"| {q.title} (`{key}`) | {who} | {_num(lo)} to {_num(hi)} {q.unit} "
                         f"| {q.cmap} | {why} |")
    return "\n".join(lines) + "\n"


#: Outlines drawn over the maps: (colour name used in captions, matplotlib colour, line style).
OUTLINES = {
    "lesions": ("cyan", "#00e5ff", "solid"),
    "controls": ("magenta", "#ff2bd6", "dashed"),
    "brain": ("yellow", "#ffe100", "solid"),
    "tissue": ("orange", "#ff6a00", "solid"),
}


def outline_text(kind: str) -> str:
    """``"dashed magenta"``: how the caption names the outline ``kind``."""
    name, _, style = OUTLINES[kind]
    return name if style == "solid" else f"{style} {name}"


#: Displayed planes: name -> (horizontal voxel axis, vertical voxel axis, sliced axis) of a
#: canonical (RAS+) grid; the first voxel of each shown axis is drawn bottom-left.
PLANES = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def plane_labels(affine, plane: str) -> dict[str, str]:
    """Anatomical direction at each edge of a displayed ``plane`` (``left``, ``right``,
    ``bottom``, ``top``) of the grid of ``affine``: the world direction (RAS+) in which the
    horizontal and the vertical voxel axes increase."""
    import nibabel as nib  # lazy: nibabel is slow-ish to import
    codes = nib.orientations.aff2axcodes(np.asarray(affine))
    h, v, _ = PLANES[plane]
    return {"left": _OPPOSITE[codes[h]], "right": codes[h],
            "bottom": _OPPOSITE[codes[v]], "top": codes[v]}
