"""scripts/compare_outputs.py compares dataset links as the datasets they name.

A run whose output lies beside its input records ``../bids``; the same run in a container
(``/bids`` and ``/out``) records the input's content identity. Both name one dataset, and the
comparison that checks a container run against a venv run must see them as equal, and must
still fail when the identity is another dataset's.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bids_agquant.bids.derivatives import dataset_identity

REPO = Path(__file__).resolve().parents[2]
COMPARE = REPO / "scripts" / "compare_outputs.py"


def _raw(root: Path, subject: str) -> Path:
    (root / f"sub-{subject}" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    (root / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.json").write_text("{}")
    return root


def _output(root: Path, link: str) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "out", "DatasetType": "derivative", "DatasetLinks": {"raw": link},
        "SourceDatasets": [{"URL": link}]}))
    return root


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), str(a), str(b)],
                          capture_output=True, text=True)


def test_relative_link_and_identity_of_the_same_dataset_agree(tmp_path):
    raw = _raw(tmp_path / "study" / "bids", "01")
    venv = _output(tmp_path / "study" / "out", "../bids")
    container = _output(tmp_path / "container_out", dataset_identity(raw))
    proc = _compare(venv, container)
    assert proc.returncode == 0, proc.stdout
    assert "0 difference(s)" in proc.stdout


def test_identity_of_another_dataset_is_a_difference(tmp_path):
    _raw(tmp_path / "study" / "bids", "01")
    other = _raw(tmp_path / "other", "02")
    venv = _output(tmp_path / "study" / "out", "../bids")
    container = _output(tmp_path / "container_out", dataset_identity(other))
    proc = _compare(venv, container)
    assert proc.returncode == 1
    assert "DatasetLinks.raw" in proc.stdout and "SourceDatasets[0].URL" in proc.stdout


def test_a_relative_link_to_nothing_is_compared_as_written(tmp_path):
    raw = _raw(tmp_path / "study" / "bids", "01")
    venv = _output(tmp_path / "study" / "out", "../bids")
    shutil.rmtree(raw)
    container = _output(tmp_path / "container_out", "ni:///sha-256;abc")
    proc = _compare(venv, container)
    assert proc.returncode == 1 and "'../bids' vs 'ni:///sha-256;abc'" in proc.stdout
