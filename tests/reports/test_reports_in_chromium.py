"""Both HTML reports opened in a real browser (Debian's headless ``chromium``), as a reader
opens them: nothing is fetched from the network, no error text is shown, every figure is there
and the browser decodes it.

How: Chromium loads a copy of the page (beside it, so relative links resolve alike) that ends
with a small probe script writing, on the ``load`` event, each ``<img>``'s decoded width into
an attribute; ``--dump-dom`` returns the page after that, ``--log-net-log`` every request the
browser made. Requests the page made (initiator ``null``: the file:// page) must be file: or
data:; Chromium's own background requests (initiator "not an origin") are not the page's.
The checks are run on a deliberately bad page first, so they are known to fail when they
should. Skipped when chromium is missing, failed then when ``CI=true``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from participant_fixture import make_participant_outputs

from bids_agquant.bids.plan import ContrastState, ParticipantPlan, VFASet
from bids_agquant.reports.participant import build_participant_report, find_maps

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000")
PROBE = """<script>window.addEventListener("load", function () {
  document.documentElement.setAttribute("data-probe-images", JSON.stringify(
    Array.from(document.images).map(function (i) { return i.complete ? i.naturalWidth : -1; })));
});</script>"""
#: Text a reader must never see in a report.
ERROR_TEXT = re.compile(r"Traceback|\bException\b|\b[A-Z]\w*Error\b|\bskipped\b|could not be "
                        r"(read|built)|\bnan\b|\bNone\b")
#: Resources a page would fetch: src/srcset/data attributes, <link href>, CSS url() and @import.
RESOURCE = re.compile(r"""(?:\b(?:src|srcset|data|poster)\s*=\s*["']?\s*|<link\b[^>]*?\bhref\s*=\s*["']?\s*|url\(\s*["']?\s*|@import\s+["']?)(?:https?:)?//""", re.I)


def _chromium() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but chromium is not installed: apt-get install -y chromium")
    pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")


class _Visible(HTMLParser):
    """The text a reader sees (no script, style or attribute values)."""

    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


@dataclass
class Rendered:
    dom: str                        # the page as the browser holds it after loading
    image_widths: list[int]         # decoded width of each <img> (0: not decoded)
    page_requests: list[str]        # URLs the page asked for (not Chromium's own)

    @property
    def text(self) -> str:
        p = _Visible()
        p.feed(self.dom)
        return " ".join(" ".join(p.parts).split())


def render(page: Path) -> Rendered:
    """Open ``page`` in headless Chromium (through a probe copy beside it)."""
    chromium = _chromium()
    html = page.read_text(encoding="utf-8")
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        net = Path(profile) / "net.json"
        try:
            run = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}/p",
                                  f"--log-net-log={net}", "--dump-dom", probe.as_uri()],
                                 capture_output=True, text=True, timeout=180)
        finally:
            probe.unlink()
        assert run.returncode == 0, run.stderr[-2000:]
        log = json.loads(net.read_text())
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requests = [e["params"]["url"] for e in log["events"]
                if kinds.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
                and e["params"].get("initiator") != "not an origin"]
    m = re.search(r'data-probe-images="([^"]*)"', run.stdout)
    widths = json.loads(m.group(1).replace("&quot;", '"')) if m else []
    return Rendered(run.stdout, widths, requests)


def problems(page: Path, n_figures: int, roots=()) -> list[str]:
    """Everything wrong with ``page`` as a reader sees it (empty: nothing)."""
    html = page.read_text(encoding="utf-8")
    shown = render(page)
    out = [f"fetches {u}" for u in shown.page_requests if not u.startswith(("file:", "data:"))]
    out += [f"refers to a network resource: {m.group(0)!r}" for m in RESOURCE.finditer(html)]
    out += [f"error text: {m.group(0)!r}" for m in ERROR_TEXT.finditer(shown.text)]
    out += [f"shows the path {r}" for r in roots if str(r) in shown.text]
    if len(shown.image_widths) != n_figures:
        out.append(f"{len(shown.image_widths)} images, {n_figures} expected")
    out += [f"image {i} not decoded" for i, w in enumerate(shown.image_widths) if w <= 0]
    return out


def test_the_checks_fail_on_a_bad_page(tmp_path):
    """A page with a remote image and stylesheet url, a broken inline image and a traceback."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><style>body{background:url('
                   'https://example.invalid/bg.png)}</style></head><body>'
                   '<img src="http://127.0.0.1:9/x.png"><img src="data:image/png;base64,AAAA">'
                   f"<p>Traceback (most recent call last): ValueError at {tmp_path}</p>"
                   "</body></html>")
    found = problems(bad, 3, roots=[tmp_path])
    assert any(p.startswith("fetches http://127.0.0.1:9/x.png") for p in found)
    assert any(p.startswith("fetches https://example.invalid/bg.png") for p in found)
    assert sum(p.startswith("refers to a network resource") for p in found) == 2
    assert any("Traceback" in p for p in found) and any("ValueError" in p for p in found)
    assert any(p.startswith("shows the path") for p in found)
    assert "2 images, 3 expected" in found
    assert sum(p.endswith("not decoded") for p in found) == 2


def test_participant_report_in_chromium(tmp_path):
    out = tmp_path / "out"
    written = make_participant_outputs(out, "01")
    vfa = VFASet(**written["vfa"])
    plan = ParticipantPlan(
        participant="01", baseline_session="D0", reference_t1w=written["reference"],
        lesion_mask=None,
        states=(ContrastState("D0", None, None, written["reference"], None),
                ContrastState("D1", "AGuIX", "AGuIX", written["bids"] / "sub-01" / "ses-D1"
                              / "anat" / "sub-01_ses-D1_ce-AGuIX_T1w.nii.gz", vfa, "D0")))
    page = build_participant_report(out, "01", plan=plan, bids_dir=written["bids"])
    # T1w registration, the VFA flicker pair; T1, delta R1, SE, Gd; the 3D views (SE and Gd per
    # agent of the post states); B1+ and VFA residual
    agents = {m.agent for m in find_maps(out, "01") if m.agent}
    assert problems(page, 1 + 2 + 4 + 2 * len(agents) + 2, roots=[tmp_path]) == []


def test_group_report_in_chromium(tmp_path):
    """Rendering only (the group report's content has tests of its own)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "group"))
    try:
        from paper_cohort import write_paper_cohort
    finally:
        sys.path.pop(0)
    from bids_agquant.config import Config
    from bids_agquant.group import run_group
    bids, out = write_paper_cohort(tmp_path)
    run_group(Config(bids_dir=bids, output_dir=out, analysis_level="group"))
    page = out / "group" / "report.html"
    n_images = page.read_text(encoding="utf-8").count("<img ")
    assert n_images > 0
    assert problems(page, n_images, roots=[tmp_path]) == []
