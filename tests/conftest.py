"""Shared test fixtures. Helpers for the external reference data live in ``evaldata.py``
(import them as ``from evaldata import require_eval``: a unique module name, since several
test folders have a conftest.py of their own)."""
from evaldata import REPO, SAMPLE_BIDS, eval_dir, require_eval  # noqa: F401
