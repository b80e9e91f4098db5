"""End to end through the command line: a small phantom participant, then a resumed rerun.

Checks what the CLI owns: exit 0, one progress line per node on the console, the per-participant
log file, outputs under OUTPUT_DIR (the lesion table, the HTML report), nothing written into BIDS_DIR, and that a
rerun with the same work dir takes the expensive nodes from the cache; identifying fields planted
in the input sidecars reach neither the console nor the log.
"""
from __future__ import annotations

import re

import pytest

import tinybids as tb
from testkit import tree_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("e2e")
    simulate.simulate_dataset(root / "bids", preset="small", n_participants=1,
                              sessions=["pre", "inj"], identifying_fields=True, seed=21)
    return root / "bids"


def test_participant_level_end_to_end_and_resume(small_phantom, run_cli, tmp_path):
    ds = small_phantom
    before = tree_state(ds)
    out, work = tmp_path / "out", tmp_path / "work"
    res = run_cli(ds, out, "participant", "-w", work, "--nprocs", "2")
    assert res.code == 0, res.err + res.out[-3000:]
    assert tree_state(ds) == before
    progress = re.findall(r"\[(\d+)(?:/\d+)?\] (\S+): done(?: in [\d.]+ s)?$", res.out, re.M)
    assert len(progress) >= 3
    logs = sorted((out / "logs").glob("sub-01_*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert "plan:" in log and "done in" in log
    for value in ("DOE^JANE", "NANORAD-01", "19580312"):      # planted in the input sidecars
        assert value not in log + res.out + res.err
    assert (out / "sub-01" / "sub-01_desc-lesions_stats.tsv").is_file()
    report = out / "sub-01.html"
    assert report.is_file() and "sub-01: report" in res.out
    assert "the HTML report could not be built" not in res.out
    assert (work / "crash").is_dir() is False or not list((work / "crash").iterdir())

    total = {int(m) for m in re.findall(r"\[\d+/(\d+)\]", res.out)}
    assert len(total) == 1 and len(progress) == total.pop()   # the count is exact

    res2 = run_cli(ds, out, "participant", "-w", work, "--nprocs", "2")
    assert res2.code == 0, res2.err
    cached = set(re.findall(r"\] (\S+): cached", res2.out))
    rerun = set(re.findall(r"\] (\S+): done", res2.out))
    registrations = {name for _, name in progress if "reg" in name}
    assert registrations and registrations <= cached      # the expensive work is not redone
    assert cached | rerun == {name for _, name in progress}
    assert len(sorted((out / "logs").glob("sub-01_*.log"))) == 2

    # the same work dir after an upgrade: the cache of other code is not reused (nipype hashes
    # a node's inputs, not the code behind it, so it would copy the old maps silently)
    import json

    from bids_agquant.cli.workcache import STAMP_FILE, code_fingerprint
    stamp = work / "sub_01_wf" / STAMP_FILE
    assert json.loads(stamp.read_text()) == code_fingerprint()
    stamp.write_text(json.dumps({**code_fingerprint(), "version": "0.0.1"}))
    res3 = run_cli(ds, out, "participant", "-w", work, "--nprocs", "2")
    assert res3.code == 0, res3.err
    assert "made by bids-agquant 0.0.1" in res3.out
    redone = set(re.findall(r"\] (\S+): done", res3.out))
    assert registrations <= redone and not re.findall(r"\] \S+: cached", res3.out)
    assert json.loads(stamp.read_text()) == code_fingerprint()
