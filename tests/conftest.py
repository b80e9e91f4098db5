"""Shared test fixtures. Helpers for the external reference data live in ``evaldata.py``
(import them as ``from evaldata import require_eval``: a unique module name, since several
test folders have a conftest.py of their own)."""
from evaldata import REPO, SAMPLE_BIDS, eval_dir, require_eval  # noqa: F401

# Importing the package first pins ITK to one thread (deterministic ANTs) in every pytest worker
# before any test runs ANTs, as the command line does in its own process.
import bids_agquant  # noqa: E402,F401


import pytest  # noqa: E402

from testkit import cli_runner  # noqa: E402


@pytest.fixture
def run_cli(capsys):
    """Call ``bids_agquant.cli.run.main(argv)`` in-process; returns a :class:`testkit.CliResult`."""
    return cli_runner(capsys)
