"""The group report and figures: sections, inline images only, the numbers shown, SVG + PNG."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

SECTIONS = ("overview", "dose", "groups", "dotarem", "concentration", "persistence", "controls",
            "sessions", "software")
FIGURES = ("dose_response", "se_by_tumor", "se_vs_diameter", "aguix_vs_dotarem", "sensitivity",
           "se_vs_concentration", "persistence", "controls")


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.links, self.scripts = set(), [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("link", "script"):
            self.scripts += 1
            self.links.append(a.get("href") or a.get("src"))


def test_group_report_sections_and_inline_images(paper_group):
    _, out = paper_group
    text = (out / "group" / "report.html").read_text()
    parser = _Collect()
    parser.feed(text)
    assert set(SECTIONS) <= parser.ids
    assert len(parser.imgs) == len(FIGURES)
    for src in parser.imgs:          # self-contained: every image is a decodable data URI
        m = re.fullmatch(r"data:image/(svg\+xml|png);base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:60]
        payload = base64.b64decode(m.group(2))
        assert payload.startswith(b"<?xml") or payload.startswith(b"\x89PNG")
    assert parser.scripts == 0 and "http://" not in text.split("<body>")[1].split("<footer")[0]
    # the key numbers are shown
    assert "1.08 %/(mg/kg)" in text and "R\u00b2 0.90" in text
    assert "kruskal-wallis" in text and "sub-04" in text


def test_figures_written_as_svg_and_png(paper_group):
    _, out = paper_group
    for name in FIGURES:
        svg = out / "group" / f"figure_{name}.svg"
        png = out / "group" / f"figure_{name}.png"
        assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
