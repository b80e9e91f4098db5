"""The methods text a paper can cite, generated from the run (versions, settings, plans).

``OUTPUT_DIR/logs/CITATION.md`` (the text, with numbered references) and
``OUTPUT_DIR/logs/CITATION.bib`` (the references), also shown in the participant report's
methods section. Every number and choice is taken from the constant or setting the pipeline
used (:mod:`bids_agquant.methods`, the plans, :class:`~bids_agquant.config.Config`, the
relaxivity table), so the text cannot drift from the code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bids_agquant import methods as MT
from bids_agquant.bids.tables import software_versions
from bids_agquant.interfaces.brain import TEMPLATE_REGISTRATION
from bids_agquant.interfaces.registration import REGISTRATION_SETTINGS
from bids_agquant.qmri import b1methods as B1M
from bids_agquant.qmri.relaxivity import get_relaxivity
from bids_agquant.reports._io import write_text_atomic

#: where the participant level writes the methods text, relative to OUTPUT_DIR (the references
#: beside it, with the suffix ``.bib``)
CITATION_FILE = "logs/CITATION.md"


@dataclass(frozen=True)
class Reference:
    key: str
    authors: str          # "Surname AB, Surname CD, ..." as journals print them
    title: str
    journal: str
    year: int
    volume: str
    pages: str
    doi: str = ""

    def text(self) -> str:
        doi = f" doi:{self.doi}" if self.doi else ""
        return (f"{self.authors.rstrip('.')}. {self.title}. {self.journal}. {self.year};{self.volume}:"
                f"{self.pages}.{doi}")

    def bibtex(self) -> str:
        names = [a.strip() for a in self.authors.replace(", et al.", "").split(",")]
        authors = " and ".join(names + (["others"] if self.authors.endswith("et al.") else []))
        fields = {"author": authors, "title": f"{{{self.title}}}", "journal": self.journal,
                  "year": str(self.year), "volume": self.volume, "pages": self.pages}
        if self.doi:
            fields["doi"] = self.doi
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items())
        return f"@article{{{self.key},\n{body}\n}}\n"


#: every reference the text can cite, by key (one home; the B1 methods' own references are in
#: :data:`bids_agquant.qmri.b1methods.METHODS`)
REFERENCES: dict[str, Reference] = {r.key: r for r in (
    Reference("verry2020", "Verry C, Dufort S, Lemasson B, et al.",
              "Targeting brain metastases with ultrasmall theranostic nanoparticles, a "
              "first-in-human trial from an MRI perspective", "Sci Adv", 2020, "6(29)",
              "eaay5279", "10.1126/sciadv.aay5279"),
    Reference("fram1987", "Fram EK, Herfkens RJ, Johnson GA, et al.",
              "Rapid calculation of T1 using variable flip angle gradient refocused imaging",
              "Magn Reson Imaging", 1987, "5", "201-208"),
    Reference("deoni2003", "Deoni SCL, Rutt BK, Peters TM",
              "Rapid combined T1 and T2 mapping using gradient recalled acquisition in the "
              "steady state", "Magn Reson Med", 2003, "49", "515-526", "10.1002/mrm.10407"),
    Reference("avants2011", "Avants BB, Tustison NJ, Song G, et al.",
              "A reproducible evaluation of ANTs similarity metric performance in brain image "
              "registration", "NeuroImage", 2011, "54", "2033-2044",
              "10.1016/j.neuroimage.2010.09.025"),
    Reference("gorgolewski2011", "Gorgolewski K, Burns CD, Madison C, et al.",
              "Nipype: a flexible, lightweight and extensible neuroimaging data processing "
              "framework in Python", "Front Neuroinform", 2011, "5", "13",
              "10.3389/fninf.2011.00013"),
    Reference("yarkoni2019", "Yarkoni T, Markiewicz CJ, de la Vega A, et al.",
              "PyBIDS: Python tools for BIDS datasets", "J Open Source Softw", 2019, "4(40)",
              "1294", "10.21105/joss.01294"),
    Reference("gorgolewski2016", "Gorgolewski KJ, Auer T, Calhoun VD, et al.",
              "The brain imaging data structure, a format for organizing and describing "
              "outputs of neuroimaging experiments", "Sci Data", 2016, "3", "160044",
              "10.1038/sdata.2016.44"),
)}


def _versions_sentence(versions: dict) -> str:
    v = {k: versions.get(k, "?") for k in ("bids_agquant", "nipype", "pybids", "antspyx",
                                           "nibabel", "numpy", "scipy")}
    return (f"Images were processed with bids_agquant {v['bids_agquant']}, a BIDS-App "
            f"[gorgolewski2016] built on Nipype {v['nipype']} [gorgolewski2011], PyBIDS "
            f"{v['pybids']} [yarkoni2019], ANTs through antspyx {v['antspyx']} [avants2011], "
            f"NiBabel {v['nibabel']}, NumPy {v['numpy']} and SciPy {v['scipy']}.")


def _numbers(values: Iterable[float], unit: str = "") -> str:
    shown = sorted({round(float(x), 4) for x in values})
    return ", ".join(f"{x:g}" for x in shown) + (f" {unit}" if unit else "")


def _protocol_sentence(plans: Sequence) -> tuple[str, list[str]]:
    """The VFA protocol(s) and B1 data of the plans, with the B1 methods' references."""
    vfa = [s.vfa for p in plans for s in p.states if s.vfa is not None]
    if not vfa:
        return "", []
    protocols = sorted({(tuple(round(a, 3) for a in v.flip_angles_deg), round(v.tr_s * 1e3, 3))
                        for v in vfa})
    shown = "; ".join(f"flip angles {_numbers(fa, 'deg')}, TR {tr:g} ms" for fa, tr in protocols)
    fields = {v.field_strength_t for v in vfa if v.field_strength_t}
    field = f" at {_numbers(fields, 'T')}" if fields else ""
    b1_kinds = sorted({v.b1_method for v in vfa if v.b1_sources})
    refs = [k for k in b1_kinds if k in B1M.METHODS]
    if not b1_kinds:
        b1 = "No B1+ map was available, so T1 was not corrected for the transmit field."
    else:
        names = [("a B1+ map read as a factor (TB1map)" if k == B1M.READ_METHOD else
                  f"{k} ({B1M.METHODS[k].title}) [{k}]") for k in b1_kinds]
        b1 = ("Flip angles were corrected voxel by voxel by the B1+ factor from "
              + " or ".join(names) + ", resampled onto the VFA grid; where the B1 map did not "
              "cover the head, the factor was extended by a smooth polynomial fit.")
    return (f"T1 was mapped by variable flip angle (VFA) spoiled gradient echo ({shown}{field}). "
            + b1), refs


def _relaxivity_sentence(plans: Sequence, overrides: dict) -> str:
    seen = {}
    for p in plans:
        for s in p.states:
            if s.agent and s.vfa is not None:
                field = s.vfa.field_strength_t
                r = get_relaxivity(s.agent, field, overrides)
                seen[(r.agent, r.field_strength_t, r.r1_per_mM_s, r.source)] = r
    if not seen:
        return ""
    parts = []
    for (agent, field, r1, source), r in sorted(seen.items(), key=lambda kv: str(kv[0])):
        at = f" at {field:g} T" if field else ""
        parts.append(f"{agent} {r1:g} /(mM s) per Gd{at} ({source})")
    return ("Gadolinium concentration was computed as delta R1 / r1 [verry2020], with the "
            "longitudinal relaxivity r1 of " + "; ".join(parts) + ".")


def _normalisation_sentence(mode: str) -> str:
    brain = MT.intensity_normalization("brain", same_session=False)
    if mode == "off":
        return "no intensity normalisation."
    if mode == "brain":
        return f"intensity normalisation: {brain}."
    return (f"when pre and post came from different sessions, {brain}; within a session, "
            "none.")


def methods_text(*, versions: dict, config, plans: Sequence, registration_settings: dict,
                 brain_settings: dict) -> tuple[str, list[str]]:
    """(the methods text as Markdown paragraphs, the keys of the references it cites in order
    of first citation). ``config``: the run's :class:`~bids_agquant.config.Config`."""
    protocol, b1_refs = _protocol_sentence(plans)
    fit = getattr(config.vfa_fit, "value", config.vfa_fit)
    norm = getattr(config.se_normalization, "value", config.se_normalization)
    paragraphs = [
        _versions_sentence(versions),
        (protocol + f" T1 and M0 were estimated from the VFA signals by {MT.FIT_METHODS[fit]} "
         "[fram1987] [deoni2003]; R1 = 1/T1.").strip(),
        ("Every T1w image was registered rigidly to the baseline pre-contrast T1w (the "
         "reference space), each VFA set to its session's T1w, with "
         f"{MT.registration_software(versions.get('antspyx', '?'), registration_settings)}; "
         "maps were resampled once into the reference space through the composed transform."),
        f"The brain mask: {MT.brain_extraction_method(brain_settings)}.",
        ("Signal enhancement was computed as SE = (S_post / S_pre - 1) x 100 % from the "
         "registered pre- and post-contrast T1w images, as in [verry2020]; "
         + _normalisation_sentence(norm) + " delta R1 = R1_post - R1_pre."),
        _relaxivity_sentence(plans, config.relaxivity_overrides),
        ("Lesion statistics (mean, SD, median of SE, delta R1 and concentration, volume and "
         "longest diameter) were computed in each lesion of the lesion mask; healthy-tissue "
         "controls: " + MT.control_regions_method(seed=config.ants_seed,
                                                   diameter_mm=config.control_diameter_mm)
         + "."),
    ]
    text = "\n\n".join(p for p in paragraphs if p)
    order: list[str] = []
    for key in [*REFERENCES, *b1_refs]:
        pos = text.find(f"[{key}]")
        if pos >= 0:
            order.append((pos, key))
    keys = [k for _, k in sorted(order)]
    return text, keys


def _reference_line(key: str) -> str:
    if key in REFERENCES:
        return REFERENCES[key].text()
    m = B1M.METHODS[key]
    return f"{m.reference} ({key}: {m.title})."


def citation_markdown(text: str, keys: list[str]) -> str:
    """CITATION.md: the text with its citations numbered in order, then the references."""
    numbered = text
    for i, key in enumerate(keys, start=1):
        numbered = numbered.replace(f"[{key}]", f"[{i}]")
    numbered = numbered.replace("] [", ", ")
    refs = "\n".join(f"{i}. {_reference_line(k)}" for i, k in enumerate(keys, start=1))
    return ("# Methods (generated by bids_agquant)\n\n"
            "This text describes the run that made these outputs; it may be copied into a "
            "manuscript as is or edited. Numbers and choices come from the run's settings.\n\n"
            f"{numbered}\n\n## References\n\n{refs}\n")


def citation_bibtex(keys: list[str]) -> str:
    """CITATION.bib: the cited references (those with a full record)."""
    return "\n".join(REFERENCES[k].bibtex() for k in keys if k in REFERENCES)


def write_citation(output_dir, config, plans: Sequence) -> tuple:
    """Write ``OUTPUT_DIR/logs/CITATION.md`` and ``.bib`` for ``plans`` (atomically); returns
    both paths."""
    text, keys = methods_text(versions=software_versions(), config=config, plans=plans,
                              registration_settings=REGISTRATION_SETTINGS,
                              brain_settings=TEMPLATE_REGISTRATION)
    md = Path(output_dir) / CITATION_FILE
    md.parent.mkdir(parents=True, exist_ok=True)
    return (write_text_atomic(md, citation_markdown(text, keys)),
            write_text_atomic(md.with_suffix(".bib"), citation_bibtex(keys)))
