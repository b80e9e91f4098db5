"""Group level: the trial's cohort tables, regressions and figures from the participant outputs.

``run_group(config)`` reads every participant lesion table
``OUTPUT_DIR/sub-<p>/sub-<p>_desc-lesions_stats.tsv`` and the covariates of
``BIDS_DIR/participants.tsv`` (``dose_mg_per_kg``, ``weight_kg``, ``primary_tumor``) and writes,
under ``OUTPUT_DIR/group/`` only, TSV tables with JSON data dictionaries, figures (SVG + PNG),
``summary.json`` and ``report.html``. It never recomputes participant work.

Session roles come from the data, never from session labels:

- the agent of a row is its ``contrast_agent`` (canonicalised through the relaxivity registry, so
  ``gadoterate`` is Dotarem);
- the sessions of a participant are put in time order from ``acq_time`` of
  ``BIDS_DIR/sub-<p>/sub-<p>_sessions.tsv`` when every session has one; otherwise from the session
  labels in natural order (``D0 < D1 < D8 < D28``, ``day1 < day8``, ``01 < 02``), with a warning;
- per agent, the first session carrying it is index 1. The first AGuIX session is the **peak**
  (the trial's D1, 2 h after injection), every later AGuIX session is **persistence** (D8: residual
  nanoparticles, nothing injected); the first Dotarem session is the **reference** of the
  AGuIX-versus-Dotarem comparison (D0). Later Dotarem sessions (D28) stay in the cohort table only.

"Concentration cannot be quantified" (later sessions): the lesion's mean concentration is ``n/a``
or below its limit of quantification. The participant level writes it per region
(``conc_quantifiable``, ``conc_lod_mM``, ``conc_loq_mM``: the region's own standard error from the
images' noise and the session's between-session term from its control regions, Currie's limits,
:mod:`bids_agquant.qmri.uncertainty`, ``docs/uncertainty.md``); the group level uses them as
written, and ``conc_detected`` for whether the agent persists. Lesion tables of older versions,
without them: not above the session's limit of detection, three times the root mean square of the
control-region mean concentrations (:func:`bids_agquant.qmri.cohort.detection_limit`), or without
control rows three standard errors of the lesion's own mean (``3 * conc_sd_mM / sqrt(n_voxels)``);
``detection_limit_source`` says which. Where not quantifiable the concentration is bounded from
SE with the participant's peak SE-versus-concentration slope: ``C_upper = SE / slope`` (paper),
and more conservatively with the lower 95 % confidence limit of that slope. The later
concentrations of the quantified lesions are also averaged with inverse-variance weights
(``persistence_by_participant``).

Multi-centre cohorts (:mod:`bids_agquant.group.sites`): every cohort row carries its session's
site (``participants.tsv`` ``site``), manufacturer, model and field strength (the T1 map
sidecars) and its QA (``session_qa_flagged``, ``session_qa_flags`` from the participant QA
tables); ``qa_by_site`` summarises QA per site and scanner; ``--exclude-qa-flagged`` leaves
flagged sessions out of every statistic. Concentrations already use each session's own field
strength for the relaxivity (participant level).

Missing covariates skip only the statistics that need them, with a warning in the log, in
``summary.json`` and in the report.
"""
from __future__ import annotations

from pathlib import Path

from bids_agquant.bids import columns, tables
from bids_agquant.group.analysis import GroupAnalysis, Table, analyse_cohort
from bids_agquant.errors import GroupDataError
from bids_agquant.group.load import (LOG, GroupInputError, find_lesion_tables, read_lesion_tables,
                                     read_participants, warn)
from bids_agquant.group.sites import exclude_flagged, qa_by_site, read_qa_tables, session_sites
from bids_agquant.reports._io import write_text_atomic
from bids_agquant.reports.figures import write_group_figures
from bids_agquant.reports.group import build_group_report

__all__ = ["run_group", "write_tables", "table_tsv", "table_dictionary"]

_sub = "sub-{}".format


def table_tsv(table: Table) -> str:
    return tables.tsv_text(table.rows, table.columns)


def table_dictionary(table: Table) -> dict:
    """JSON data dictionary of a group table, from the column registry."""
    return columns.dictionary(table.name, table.columns)


def write_tables(analysis: GroupAnalysis, group_dir: Path) -> list[Path]:
    """Write every table as TSV plus a JSON data dictionary; returns the paths written."""
    written = []
    for t in analysis.tables.values():
        written.append(write_text_atomic(group_dir / f"{t.name}.tsv", table_tsv(t)))
        written.append(write_text_atomic(group_dir / f"{t.name}.json",
                                         tables.json_text(table_dictionary(t))))
    return written


def run_group(config) -> None:
    """Group level of the BIDS-App (see module docstring). Writes only under OUTPUT_DIR/group/.

    Raises :class:`GroupInputError` when no participant lesion table exists and
    :class:`GroupDataError` when one cannot be read.
    """
    output_dir = Path(config.output_dir)
    bids_dir = Path(config.bids_dir) if getattr(config, "bids_dir", None) else None
    labels = tuple(getattr(config, "participant_labels", ()) or ())
    found = find_lesion_tables(output_dir, labels)
    if not found:
        names = (_sub(tables.strip_prefix(p, "sub-")) for p in labels)
        which = f" for {', '.join(names)}" if labels else ""
        raise GroupInputError(
            f"no participant lesion table (sub-*/sub-*_desc-lesions_stats.tsv) in {output_dir}"
            f"{which}: run the participant level first")
    LOG.info("group level: %d participant lesion table(s) in %s", len(found), output_dir)
    warnings: list[str] = []
    lesions = read_lesion_tables(found)
    covariates = read_participants(bids_dir, warnings)
    qa = read_qa_tables(output_dir, list(dict.fromkeys(lesions["participant"])))
    sites = session_sites(output_dir, bids_dir, lesions, qa)
    lesions = lesions.merge(sites, on=["participant", "session"], how="left")
    excluded: list[str] = []
    if getattr(config, "exclude_qa_flagged", False):
        lesions, excluded = exclude_flagged(lesions)
        if excluded:
            warn(warnings, f"--exclude-qa-flagged: {len(excluded)} session(s) with a QA flag "
                           f"left out of every statistic: {', '.join(excluded)}")
        if lesions.empty:
            raise GroupDataError("--exclude-qa-flagged: every session has a QA flag, nothing "
                                 "is left to analyse; check the participant QA tables "
                                 "(docs/qa.md) or run without the option")
    analysis = analyse_cohort(lesions, covariates, bids_dir, warnings)
    analysis.tables["qa_by_site"] = Table.registered(
        "qa_by_site", "QA by site and scanner",
        "Sessions, QA-flagged sessions, the metrics flagged and median QA metrics per site "
        "(participants.tsv site) and scanner (manufacturer, model, field strength).",
        qa_by_site(sites, qa))
    analysis.summary["qa_excluded_sessions"] = excluded

    group_dir = output_dir / "group"
    group_dir.mkdir(parents=True, exist_ok=True)
    write_tables(analysis, group_dir)
    figures = write_group_figures(analysis, group_dir)
    analysis.summary["figures"] = {k: [p.name for p in v] for k, v in figures.items()}
    write_text_atomic(group_dir / "summary.json",
                      tables.json_text(analysis.summary))
    report = build_group_report(analysis, group_dir, figures)
    LOG.info("group level: %d table(s), %d figure(s), report %s", len(analysis.tables),
             len(figures), report)
