"""The MNI ICBM152 template the app and the simulator use, read where nilearn installs it.

nilearn (a dependency) ships the ICBM 2009a nonlinear symmetric template at 1 mm: a
skull-stripped T1-weighted image (intracranial: parenchyma and CSF, uint8 0-255) and grey- and
white-matter probability maps (uint8, 255 = 1). Nothing is downloaded and nothing is copied into
this repository; the files are found through the installed package's location without importing
it (nilearn's import pulls scikit-learn). ``BIDS_AGQUANT_TEMPLATE_DIR`` points at another folder
holding the same file names (for a site that vendors the template).

Reference: Fonov V, et al. Unbiased average age-appropriate atlases for pediatric studies.
NeuroImage 2011;54:313-327 (ICBM 2009a, nonlinear symmetric).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TEMPLATE_NAME", "TemplateFiles", "TemplateMissingError", "mni152_files"]

#: How outputs and methods text name the template.
TEMPLATE_NAME = "MNI ICBM152 2009a nonlinear symmetric (1 mm, as shipped by nilearn)"
_FILES = {"t1w": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
          "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
          "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
ENV_DIR = "BIDS_AGQUANT_TEMPLATE_DIR"


class TemplateMissingError(FileNotFoundError):
    """The template files are not where nilearn (or ``BIDS_AGQUANT_TEMPLATE_DIR``) puts them."""


@dataclass(frozen=True)
class TemplateFiles:
    t1w: Path       # skull-stripped T1w; > 0 inside the intracranial volume
    gm: Path        # grey-matter probability (x 255)
    wm: Path        # white-matter probability (x 255)


def _folder() -> Path:
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise TemplateMissingError(
            "the MNI152 template comes with the Python package nilearn, which is not installed; "
            "install bids-agquant with its dependencies (pip install bids-agquant) or set "
            f"{ENV_DIR} to a folder holding {', '.join(_FILES.values())}")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def mni152_files() -> TemplateFiles:
    """Paths of the template's T1w and tissue-probability images (checked to exist)."""
    folder = _folder()
    paths = {key: folder / name for key, name in _FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise TemplateMissingError(
            f"MNI152 template file(s) missing: {', '.join(missing)}; reinstall nilearn "
            f"(pip install --force-reinstall nilearn) or set {ENV_DIR}")
    return TemplateFiles(**paths)
