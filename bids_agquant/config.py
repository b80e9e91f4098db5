"""One frozen settings object, built once from the command line and handed down explicitly."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

#: The ``space-`` label of every map in the reference space (each participant's baseline
#: pre-contrast T1w; the sidecar's ``SpatialReference`` names the exact file).
REFERENCE_SPACE = "T1w"


class Choice(StrEnum):
    """A command-line choice held by :class:`Config`; the command line builds its ``choices`` from
    it. A ``StrEnum`` member equals, hashes, formats and JSON-encodes as its plain string; its
    ``repr`` is the plain string's too, so text written with ``!r`` (sidecars) and nipype's input
    hashes (made from reprs: a resumed run finds its cache) are what they were with strings."""

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def values(cls) -> list[str]:
        """The plain strings, in definition order (argparse ``choices``)."""
        return [member.value for member in cls]


class AnalysisLevel(Choice):
    PARTICIPANT = "participant"
    GROUP = "group"


class B1Correction(Choice):
    AUTO = "auto"                 # correct the flip angles with the session's TB1map if any
    OFF = "off"


class VFAFit(Choice):
    NONLINEAR = "nonlinear"
    LINEAR = "linear"             # DESPOT1


class SENormalization(Choice):
    AUTO = "auto"                 # "brain" when pre and post come from different sessions
    BRAIN = "brain"
    OFF = "off"


@dataclass(frozen=True)
class Config:
    bids_dir: Path
    output_dir: Path
    analysis_level: AnalysisLevel
    work_dir: Path | None = None                      # nipype cache; the CLI defaults it to
                                                      # OUTPUT_DIR/.work (see docs/cli.md)
    participant_labels: tuple[str, ...] = ()          # without "sub-"; empty = all
    session_labels: tuple[str, ...] = ()              # without "ses-"; empty = all
    baseline_session: str | None = None
    session_agents: dict = field(default_factory=dict)         # --session-agent: ses -> agent text
    lesion_masks_dir: Path | None = None              # default: look under BIDS_DIR/derivatives
    relaxivity_overrides: dict = field(default_factory=dict)   # agent label -> r1 1/(mM s)
    b1_correction: B1Correction = B1Correction.AUTO
    vfa_fit: VFAFit = VFAFit.NONLINEAR
    control_diameter_mm: float = 25.0                 # healthy-tissue control spheres (mm)
    se_normalization: SENormalization = SENormalization.AUTO
    nprocs: int = 1
    omp_nthreads: int = 1
    plugin: str = "MultiProc"
    plugin_args: dict = field(default_factory=dict)
    plugin_file: Path | None = None                   # --use-plugin YAML (None: MultiProc)
    skip_bids_validation: bool = False
    ants_seed: int = 42                               # ANTs runs deterministic with this seed
    verbose: int = 0
    print_plan: bool = False                          # validate, print the plans, compute nothing
    bids_filter_file: Path | None = None              # --bids-filter-file (its content below)
    bids_filters: dict = field(default_factory=dict)  # query -> {entity: value} (bids/filters.py)
    reports_only: bool = False                        # rebuild the reports from OUTPUT_DIR
    boilerplate_only: bool = False                    # write the methods text, run nothing
    stop_on_first_crash: bool = True                  # nipype's execution.stop_on_first_crash
    clean_workdir: bool = False                       # delete the participants' cache first
    exclude_qa_flagged: bool = False                  # group: leave QA-flagged sessions out
    resource_monitor: bool = False                    # nipype's resource monitor, per-node table

    @property
    def log_dir(self) -> Path:
        """Per-run logs: ``OUTPUT_DIR/logs/sub-<p>_<timestamp>.log`` (in .bidsignore)."""
        return Path(self.output_dir) / "logs"

    @property
    def crashdump_dir(self) -> Path:
        """Where nipype writes crash files (text): inside the work dir, never in BIDS_DIR."""
        return Path(self.work_dir or Path(self.output_dir) / ".work") / "crash"
