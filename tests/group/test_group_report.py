"""The group report and figures: sections, inline images only, the numbers shown, SVG + PNG."""
from __future__ import annotations

import base64
import math
import re

from paper_cohort import read_tsv
from testkit import PageParts

SECTIONS = ("overview", "dose", "groups", "dotarem", "concentration", "persistence", "controls",
            "sessions", "software")
FIGURES = ("dose_response", "se_by_tumor", "se_vs_diameter", "aguix_vs_dotarem", "sensitivity",
           "se_vs_concentration", "persistence", "controls")


def _shown(text: str, label: str) -> list[str]:
    """The numbers shown after ``label`` in ``text`` (e.g. ``R² 0.90`` -> ["0.90"])."""
    return re.findall(rf"{re.escape(label)}\s*(-?\d+(?:\.\d+)?)", text)


def _rounds_to(shown: str, value: float) -> bool:
    """``shown`` is ``value`` rounded to the decimals it shows."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-12


def test_group_report_sections_and_inline_images(paper_group):
    _, out = paper_group
    text = (out / "group" / "report.html").read_text()
    parser = PageParts(text)
    assert set(SECTIONS) <= parser.ids
    assert len(parser.imgs) == len(FIGURES)
    for src in parser.imgs:          # self-contained: every image is a decodable data URI
        m = re.fullmatch(r"data:image/(svg\+xml|png);base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:60]
        payload = base64.b64decode(m.group(2))
        assert payload.startswith(b"<?xml") or payload.startswith(b"\x89PNG")
    assert not parser.external and "http://" not in text.split("<body>")[1].split("<footer")[0]
    # the key numbers are the computed ones: the dose-response card against the mixed-model
    # and lesion-level rows of mixed_models.tsv, the factor cards against its headline rows
    models = read_tsv(out / "group" / "mixed_models.tsv")
    mixed_dose, naive_dose = (next(r for r in models if r["model"] == "dose response"
                                   and r["method"].startswith(m)) for m in ("mixed", "lesion"))
    card = parser.cards["dose-response slope"]
    (slope,) = _shown(card["value"], "")
    assert _rounds_to(slope, float(mixed_dose["estimate"])), (card, mixed_dose)
    mixed_part, naive_part = card["note"].split("lesion-level")
    for part, row in ((mixed_part, mixed_dose), (naive_part, naive_dose)):
        low, high = re.findall(r"-?\d+\.\d+", part.split("CI")[1])[:2]
        assert _rounds_to(low, float(row["ci_low"])) and _rounds_to(high, float(row["ci_high"]))
    (naive,) = re.findall(r"\)\s*(-?\d+\.\d+),", naive_part)
    assert _rounds_to(naive, float(naive_dose["estimate"]))
    for label, model in (("tumour types differ?", "primary tumour"),
                         ("size bins differ?", "size bin")):
        rows = [r for r in models if r["model"] == model and r["method"].startswith("mixed")]
        row = next((r for r in rows if r["term"] == "all levels equal"), rows[0])
        assert row["status"] == "ok", row
        p = float(row["p_value"])
        value = parser.cards[label]["value"]
        if value.startswith("p <"):
            assert p < float(value.removeprefix("p <"))
        else:                       # two significant digits
            shown = value.removeprefix("p = ")
            assert abs(float(shown) - p) <= 0.5 * 10 ** (math.floor(math.log10(p)) - 1), (value, p)
        assert "mixed model" in parser.cards[label]["note"]
    n = len({r["participant_id"] for r in read_tsv(out / "group" / "cohort_lesions.tsv")})
    assert parser.cards["participants"]["value"] == str(n)


def test_figures_written_as_svg_and_png(paper_group):
    _, out = paper_group
    for name in FIGURES:
        svg = out / "group" / f"figure_{name}.svg"
        png = out / "group" / f"figure_{name}.png"
        assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
