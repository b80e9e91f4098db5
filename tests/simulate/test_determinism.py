"""Same seed, same bytes; the committed sample dataset is exactly what its command regenerates."""
from __future__ import annotations

import gzip
import json
import math
import shlex
from pathlib import Path

import pytest

from bids_agquant.simulate import load_truth, simulate_dataset
from bids_agquant.simulate.cli import main as simulate_main

REPO = Path(__file__).resolve().parents[2]
SAMPLE_BIDS = REPO / "data" / "sample_bids"
SAMPLE_TRUTH = REPO / "data" / "sample_truth"

TINY = dict(preset="small", n_participants=1, sessions=("D0", "D1", "D8"),
            lesion_diameters_mm=(12.0, 20.0))


def _tree(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _payload(path: Path) -> bytes:
    """File content; for .gz the decompressed bytes (the gzip stream itself may differ between
    zlib builds, e.g. zlib-ng in some containers, while the data must not)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


#: Relative tolerance for floats of a JSON record (truth poses, sidecars): matrix products through
#: BLAS may differ in the last bit between CPUs (SIMD paths); images and tables must match exactly.
RECORD_RTOL = 1e-12


def _same_values(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_values(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            math.isclose(a, b, rel_tol=RECORD_RTOL, abs_tol=RECORD_RTOL)
    return a == b


def _same_record(fresh: Path, kept: Path) -> bool:
    """Two JSON files hold the same keys, texts and integers, and floats equal to RECORD_RTOL."""
    return _same_values(json.loads(fresh.read_text()), json.loads(kept.read_text()))


def test_record_comparison_sees_a_real_change():
    assert _same_values({"m": [[0.025504375396635543]]}, {"m": [[0.025504375396635536]]})
    assert not _same_values({"m": [[0.0255043]]}, {"m": [[0.0255044]]})
    assert not _same_values({"m": [1.0]}, {"m": [1.0, 2.0]})
    assert not _same_values({"a": "x"}, {"a": "y"})


def _generate(root: Path, **kw):
    # the default recorded command names the (different) output paths: fix it for comparison
    return simulate_dataset(root / "bids", truth_dir=root / "truth", command="test",
                            **{**TINY, **kw})


def test_same_seed_gives_identical_bytes(tmp_path):
    _generate(tmp_path / "a", seed=5)
    _generate(tmp_path / "b", seed=5)
    for sub in ("bids", "truth"):
        a, b = _tree(tmp_path / "a" / sub), _tree(tmp_path / "b" / sub)
        assert a.keys() == b.keys()
        for rel in a:
            # same process, same zlib: even the compressed bytes are identical (mtime 0, no name)
            assert a[rel].read_bytes() == b[rel].read_bytes(), rel
    t1w = "sub-01/ses-D0/anat/sub-01_ses-D0_T1w.nii.gz"
    raw = (tmp_path / "a" / "bids" / t1w).read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"   # gzip header mtime is zero


def test_other_seed_differs_and_dropping_a_session_changes_nothing_else(tmp_path):
    _generate(tmp_path / "a", seed=5)
    _generate(tmp_path / "c", seed=6)
    _generate(tmp_path / "d", seed=5, drop_sessions={"01": ("D8",)})
    t1w = "sub-01/ses-D0/anat/sub-01_ses-D0_T1w.nii.gz"
    a, c, d = (_tree(tmp_path / x / "bids") for x in "acd")
    assert _payload(a[t1w]) != _payload(c[t1w])
    assert not any("ses-D8" in rel for rel in d)
    for rel, path in d.items():
        if rel.endswith("_sessions.tsv"):
            continue
        assert _payload(path) == _payload(a[rel]), rel


def _sample_command() -> list[str]:
    readme = (SAMPLE_TRUTH / "README.md").read_text().splitlines()
    line = next(ln.strip() for ln in readme if ln.strip().startswith("bids-agquant-simulate"))
    return shlex.split(line)


def test_sample_dataset_is_small_and_loads():
    if not SAMPLE_BIDS.is_dir():
        pytest.skip("data/sample_bids not generated yet")
    size = sum(p.stat().st_size for p in SAMPLE_BIDS.rglob("*") if p.is_file())
    assert size < 10 * 1024 * 1024
    truth = load_truth(SAMPLE_TRUTH)
    assert truth.bids_dir == SAMPLE_BIDS.resolve()
    assert len(truth.participants) == 2
    covs = [truth.participant(p)["covariates"] for p in truth.participants]
    assert covs[0]["dose_mg_per_kg"] != covs[1]["dose_mg_per_kg"]
    assert covs[0]["primary_tumor"] != covs[1]["primary_tumor"]
    for p in truth.participants:
        assert truth.sessions(p) == ["D0", "D1", "D8", "D28"]
    cmd = _sample_command()
    assert cmd[:2] == ["bids-agquant-simulate", "data/sample_bids"]
    assert json.loads((SAMPLE_TRUTH / "truth.json").read_text())["command"] == shlex.join(cmd)


@pytest.mark.slow
def test_sample_dataset_regenerates_bit_for_bit(tmp_path, monkeypatch):
    if not SAMPLE_BIDS.is_dir():
        pytest.skip("data/sample_bids not generated yet")
    cmd = _sample_command()
    monkeypatch.chdir(tmp_path)
    assert simulate_main(cmd[1:]) == 0
    for name, committed in (("sample_bids", SAMPLE_BIDS), ("sample_truth", SAMPLE_TRUTH)):
        fresh = _tree(tmp_path / "data" / name)
        kept = _tree(committed)
        assert fresh.keys() == kept.keys(), name
        for rel in kept:
            same = (_same_record(fresh[rel], kept[rel]) if rel.endswith(".json")
                    else _payload(fresh[rel]) == _payload(kept[rel]))
            assert same, f"{name}/{rel} drifted: regenerate with the command at the top of " \
                f"data/sample_truth/README.md"


def test_cli_writes_a_dataset_and_refuses_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "phantom"
    rc = simulate_main([str(out), "--small", "--participants", "1", "--sessions", "base", "day1",
                        "--lesion-diameters", "12", "20", "--snr", "30", "--seed", "9"])
    assert rc == 0
    truth = load_truth(tmp_path / "phantom_truth")
    assert truth.meta["config"]["snr"] == 30.0 and truth.sessions("01") == ["base", "day1"]
    assert (out / "sub-01/ses-day1/anat/sub-01_ses-day1_ce-AGuIX_T1w.nii.gz").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    rc = simulate_main([str(foreign), "--small", "--overwrite"])
    assert rc == 64
    assert "refusing" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_noise_seed_changes_the_noise_alone(tmp_path):
    """``noise_seed``: the same phantom (truth, lesions, B1, poses) under another noise
    realisation; ``noise_seed == seed`` is the default."""
    _generate(tmp_path / "a", seed=5)
    _generate(tmp_path / "same", seed=5, noise_seed=5)
    _generate(tmp_path / "n", seed=5, noise_seed=77)
    a, same, n = (_tree(tmp_path / x / "bids") for x in ("a", "same", "n"))
    assert a.keys() == same.keys() == n.keys()
    t1w = "sub-01/ses-D0/anat/sub-01_ses-D0_T1w.nii.gz"
    for rel in a:
        assert _payload(same[rel]) == _payload(a[rel]), rel
    assert _payload(n[t1w]) != _payload(a[t1w])
    images = [rel for rel in a if rel.endswith(".nii.gz") and "/anat/" in rel]
    assert images and all(_payload(n[rel]) != _payload(a[rel]) for rel in images
                          if "_mask" not in rel and "_dseg" not in rel)
    ta, tn = _tree(tmp_path / "a" / "truth"), _tree(tmp_path / "n" / "truth")
    assert ta.keys() == tn.keys()
    for rel in ta:
        if rel.endswith(".json"):
            fa, fn = json.loads(ta[rel].read_text()), json.loads(tn[rel].read_text())
            fa.get("config", {}).pop("noise_seed", None)
            fn.get("config", {}).pop("noise_seed", None)
            assert _same_values(fa, fn), rel
        elif rel.endswith(".nii.gz"):
            assert _payload(ta[rel]) == _payload(tn[rel]), rel
