"""The work dir's cache of a participant is reused only by the code that made it."""
from __future__ import annotations

import json
import logging

from bids_agquant.cli import workcache as W


def _cache(tmp_path, stamp=None):
    folder = tmp_path / "work" / "sub_01_wf"
    (folder / "reg_wf" / "node").mkdir(parents=True)
    (folder / "reg_wf" / "node" / "result.pklz").write_bytes(b"old result")
    if stamp is not None:
        (folder / W.STAMP_FILE).write_text(json.dumps(stamp))
    return folder


def test_the_fingerprint_names_the_version_sources_and_dependencies():
    fp = W.code_fingerprint()
    assert fp["version"] and len(fp["sources_sha256"]) == 64
    assert set(fp["dependencies"]) == set(W.FINGERPRINT_DISTRIBUTIONS)
    assert fp["dependencies"]["numpy"] != "absent"


def test_a_cache_of_this_code_is_kept(tmp_path):
    folder = _cache(tmp_path, W.code_fingerprint())
    assert W.claim_cache(folder, True, "sub-01") is None
    assert (folder / "reg_wf" / "node" / "result.pklz").read_bytes() == b"old result"


def test_a_cache_of_another_version_is_removed_in_our_own_work_dir(tmp_path, caplog):
    folder = _cache(tmp_path, {**W.code_fingerprint(), "version": "0.0.1"})
    with caplog.at_level(logging.INFO, logger="bids_agquant"):
        assert W.claim_cache(folder, True, "sub-01") is None
    assert not (folder / "reg_wf").exists()
    assert json.loads((folder / W.STAMP_FILE).read_text()) == W.code_fingerprint()
    assert "made by bids-agquant 0.0.1" in caplog.text


def test_changed_dependencies_and_sources_are_named(tmp_path, caplog):
    deps = {**W.code_fingerprint()["dependencies"], "numpy": "1.0.0"}
    folder = _cache(tmp_path, {**W.code_fingerprint(), "dependencies": deps})
    with caplog.at_level(logging.INFO, logger="bids_agquant"):
        W.claim_cache(folder, True, "sub-01")
    assert "numpy 1.0.0 (now " in caplog.text
    other = _cache(tmp_path / "b", {**W.code_fingerprint(), "sources_sha256": "0" * 64})
    with caplog.at_level(logging.INFO, logger="bids_agquant"):
        W.claim_cache(other, True, "sub-01")
    assert "source files" in caplog.text and not (other / "reg_wf").exists()


def test_an_unstamped_cache_in_a_work_dir_not_ours_is_moved_aside_not_deleted(tmp_path):
    folder = _cache(tmp_path)                       # no stamp: a version before stamps
    moved = W.claim_cache(folder, False, "sub-01")
    assert moved is not None and moved.name.startswith("sub_01_wf.stale-")
    assert (moved / "reg_wf" / "node" / "result.pklz").read_bytes() == b"old result"
    assert sorted(p.name for p in folder.iterdir()) == [W.STAMP_FILE]


def test_the_cli_docs_name_the_stamp_file():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    assert f"`WORK_DIR/sub_<p>_wf` holds `{W.STAMP_FILE}`" in text
