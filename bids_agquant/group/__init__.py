"""The group level of the BIDS-App: cohort tables, statistics, figures and report.

- :mod:`~bids_agquant.group.load`: participant lesion tables and covariates into typed pandas
  DataFrames;
- :mod:`~bids_agquant.group.analysis`: one small function per output table, from those
  DataFrames (the statistics and thresholds are in :mod:`bids_agquant.qmri.cohort`);
- :mod:`~bids_agquant.group.run`: :func:`run_group`, which writes ``OUTPUT_DIR/group/`` (tables,
  figures and report through :mod:`bids_agquant.reports`).
"""
from bids_agquant.group.analysis import GroupAnalysis, Table, analyse_cohort
from bids_agquant.group.load import GroupDataError, GroupInputError, LESION_TABLE_COLUMNS
from bids_agquant.group.run import run_group

__all__ = ["run_group", "analyse_cohort", "GroupAnalysis", "Table", "GroupInputError",
           "GroupDataError", "LESION_TABLE_COLUMNS"]
