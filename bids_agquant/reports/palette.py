"""The colours of the group figures: the Okabe-Ito palette, safe for colour-vision deficiency.

Okabe & Ito, *Color Universal Design* (2002/2008); eight colours that stay distinct under
protanopia, deuteranopia and tritanopia. One blue only (``BLUE``; ``SKY_BLUE`` is kept for
a fifth category and later): two blues side by side are what this palette avoids.
Each role below names one colour, and every group figure takes its colours from here.
"""
from __future__ import annotations

__all__ = ["OKABE_ITO", "BLACK", "ORANGE", "SKY_BLUE", "GREEN", "YELLOW", "BLUE", "VERMILLION",
           "PURPLE", "GREY", "BAND", "TUMOR_COLOURS", "CATEGORY_CYCLE", "MARKERS", "FIT",
           "FIT_BAND", "MIXED_FIT", "OK", "FLAGGED", "BAR", "tumor_colour", "participant_styles"]

BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"          # Okabe-Ito "bluish green"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"         # Okabe-Ito "reddish purple"
#: The eight colours in Okabe and Ito's order.
OKABE_ITO = (BLACK, ORANGE, SKY_BLUE, GREEN, YELLOW, BLUE, VERMILLION, PURPLE)
#: Neutral colours (not categories): missing labels, reference lines, confidence bands.
GREY = "#6b7280"
BAND = "#bdbdbd"

#: The paper's four primary tumours (keys lower case); any other type takes the next colour of
#: :data:`CATEGORY_CYCLE` not already used here.
TUMOR_COLOURS = {"nsclc": BLUE, "breast": PURPLE, "melanoma": ORANGE, "colon": GREEN}
#: Categories in order (participants, unknown tumour types); yellow last (weak on white); black
#: is not a category (fit lines and means are black).
CATEGORY_CYCLE = (BLUE, ORANGE, GREEN, PURPLE, VERMILLION, SKY_BLUE, YELLOW)
#: Marker shapes combined with :data:`CATEGORY_CYCLE` when there are more categories than colours.
MARKERS = ("o", "s", "^", "D")

#: Roles.
FIT = BLACK                # least-squares line of the means
FIT_BAND = BAND            # its confidence band
MIXED_FIT = VERMILLION     # mixed-model line (population average)
OK = GREEN                 # a control within its threshold
FLAGGED = VERMILLION       # a control beyond it
BAR = BLUE


def tumor_colour(name: str | None, known: list[str] | None = None) -> str:
    """Stable colour of a primary tumour type: the paper's four fixed, others in sorted order
    from the colours of :data:`CATEGORY_CYCLE` the four do not use."""
    if not name:
        return GREY
    key = name.strip().lower()
    if key in TUMOR_COLOURS:
        return TUMOR_COLOURS[key]
    spare = [c for c in CATEGORY_CYCLE if c not in TUMOR_COLOURS.values()]
    others = sorted({k for k in (known or []) if k and k.strip().lower() not in TUMOR_COLOURS}
                    | {name})
    return spare[others.index(name) % len(spare)]


def participant_styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """``{label: (colour, marker)}``: colours cycle first, then the marker changes, so up to
    ``len(CATEGORY_CYCLE) * len(MARKERS)`` participants get a distinct pair."""
    n = len(CATEGORY_CYCLE)
    return {p: (CATEGORY_CYCLE[i % n], MARKERS[(i // n) % len(MARKERS)])
            for i, p in enumerate(labels)}
