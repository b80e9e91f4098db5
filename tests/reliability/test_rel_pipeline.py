"""Nothing lost, nothing leaked: the participant and group levels end to end (slow).

One phantom dataset (2 participants, sessions 'pre' and 'inj', identifying DICOM fields planted
in every sidecar, per-voxel problems planted in sub-02) is made read-only, then:

1. both participants run at once as two processes writing into one OUTPUT_DIR (an HPC array)
   with the default work dir (OUTPUT_DIR/.work, so shared by both jobs), then the group level
   runs (the shared run of this module);
2. sub-01 is run again into a second OUTPUT_DIR with its own ``-w`` (as scripts/sbatch_*.sh
   do), SIGKILLed (whole process group) after 3 finished nodes, resumed and SIGKILLed again once
   its first outputs were written, then resumed to the end.

Checked: exit codes; the input tree is byte-for-byte and permission-for-permission unchanged
(as root chmod stops nothing, so checksums and a listing decide); every output file is complete
(NIfTI data read through the gzip CRC, JSON parsed, TSV rectangular, HTML closed) right after a
SIGKILL too; one correct dataset_description.json; the resumed outputs equal the uninterrupted
ones exactly (NIfTI arrays and affines, lesion table, sidecars, transforms); NaN/Inf voxels and
failed fits are NaN, counted and reported, never fatal; no identifying field name or value in any
output (JSON, TSV, HTML, logs, figures' text, NIfTI header fields and extensions) nor in the work
dir; group-level bad inputs.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import relkit as rk
from testkit import CliResult, read_tsv, tree_state

pytestmark = pytest.mark.slow

#: planted by the simulator (bids_agquant.simulate, identifying_fields=True); the issue's six first
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AcquisitionDateTime",
               "InstitutionAddress", "DeviceSerialNumber", "InstitutionName", "StationName",
               "ReferringPhysicianName", "OperatorsName", "AccessionNumber", "PatientSex",
               "PatientWeight")
NAN_BLOCK = 48          # 4 x 4 x 3 voxels


def cli(*args, env_extra=None, **popen):
    env = {**os.environ, "PYTHONPATH": str(rk.REPO), "NIPYPE_NO_ET": "1",
           "OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
           **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "bids_agquant", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=1200):
    out, err = proc.communicate(timeout=timeout)
    return CliResult(proc.returncode, out, err)


def centre_block(shape):
    c = [s // 2 for s in shape]
    return (slice(c[0] - 2, c[0] + 2), slice(c[1] - 2, c[1] + 2), slice(c[2] - 1, c[2] + 2))


def plant_voxel_problems(ds: Path) -> dict:
    """sub-02: NaN block in the AGuIX T1w, NaN half-volume in one AGuIX flip angle, and a block
    whose pre-contrast VFA signals follow M0 sin(a) (T1 infinite: no fit) in every flip angle."""
    anat = ds / "sub-02" / "ses-inj" / "anat"
    t1w = anat / "sub-02_ses-inj_ce-AGuIX_T1w.nii.gz"
    _, data = rk.load(t1w)
    data = data.astype(np.float32)
    data[centre_block(data.shape)] = np.nan
    rk.save_like(t1w, data)
    vfa = anat / "sub-02_ses-inj_ce-AGuIX_flip-2_VFA.nii.gz"
    _, data = rk.load(vfa)
    data = data.astype(np.float32)
    data[: data.shape[0] // 2] = np.nan
    rk.save_like(vfa, data)
    n_slab = int(np.isnan(data).sum())
    pre = sorted((ds / "sub-02" / "ses-pre" / "anat").glob("sub-02_ses-pre_flip-*_VFA.nii.gz"))
    for f in pre:
        fa = json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text())["FlipAngle"]
        img, data = rk.load(f)
        data = data.copy()
        data[centre_block(data.shape)] = np.round(3000 * np.sin(np.deg2rad(fa)))
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(f))
    return {"t1w": t1w.name, "vfa": vfa.name, "n_slab": n_slab, "pre_vfa": pre[0].name}


def set_read_only(root: Path, read_only: bool) -> None:
    for top, dirs, files in os.walk(root):
        for name in files:
            p = Path(top, name)
            if not p.is_symlink():
                p.chmod(0o444 if read_only else 0o644)
        Path(top).chmod(0o555 if read_only else 0o755)


def check_complete(root: Path, skip=("logs",)) -> list[str]:
    """Problems with files under their final names (hidden temporary files are not final)."""
    problems = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or rel.parts[0] in skip or any(x.startswith(".") and x != ".bidsignore"
                                                           for x in rel.parts):
            continue
        try:
            if p.name.endswith((".nii.gz", ".nii")):
                np.asanyarray(nib.load(str(p)).dataobj)     # reads through the gzip CRC
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".tsv":
                with open(p, newline="") as fh:
                    rows = list(csv.reader(fh, delimiter="\t"))
                assert rows and len({len(r) for r in rows}) == 1, "ragged or empty TSV"
            elif p.suffix == ".html":
                assert p.read_text().rstrip().endswith("</html>"), "unterminated HTML"
            elif p.suffix == ".png":
                assert p.read_bytes()[-8:] == b"IEND\xaeB`\x82", "truncated PNG"
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{rel}: {exc!r}")
    return problems


def temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from bids_agquant import simulate
    root = tmp_path_factory.mktemp("rel_e2e")
    ds = root / "bids"
    t0 = time.monotonic()
    simulate.simulate_dataset(ds, preset="small", n_participants=2, sessions=["pre", "inj"],
                              identifying_fields=True, seed=5)
    planted = plant_voxel_problems(ds)
    sidecar = json.loads((ds / "sub-01" / "ses-pre" / "anat" /
                          "sub-01_ses-pre_flip-1_VFA.json").read_text())
    assert all(k in sidecar for k in IDENTIFYING), "the simulator did not plant the fields"
    set_read_only(ds, True)
    before = tree_state(ds)
    out = root / "out"
    work = out / ".work"           # the default work dir, shared by both jobs
    t1 = time.monotonic()
    jobs = {p: cli(ds, out, "participant", "--participant-label", p, "--nprocs", "1")
            for p in ("01", "02")}
    results = {p: finish(j) for p, j in jobs.items()}
    t2 = time.monotonic()
    group = finish(cli(ds, out, "group"))
    t3 = time.monotonic()
    timings = {"simulate_s": t1 - t0, "participants_s": t2 - t1, "group_s": t3 - t2}
    yield dict(root=root, ds=ds, out=out, work=work, before=before, results=results,
               group=group, planted=planted, sidecar=sidecar, timings=timings)
    set_read_only(ds, False)


def test_concurrent_participant_jobs_succeed(shared):
    for p, res in shared["results"].items():
        assert res.code == 0, (p, res.err, res.out[-3000:])
        assert "Traceback" not in res.err
    print("timings:", {k: round(v, 1) for k, v in shared["timings"].items()})


def test_concurrent_jobs_leave_one_correct_dataset_description(shared):
    out = shared["out"]
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    assert desc["GeneratedBy"][0]["Name"] == "bids_agquant"
    lines = (out / ".bidsignore").read_text().splitlines()
    assert len(lines) == len(set(lines)) and "logs" in lines and "group" in lines
    assert check_complete(out) == []
    assert temp_files(out) == []
    for p in ("01", "02"):
        assert (out / f"sub-{p}" / f"sub-{p}_desc-lesions_stats.tsv").is_file()
        assert len(list((out / "logs").glob(f"sub-{p}_*.log"))) == 1
        assert (out / f"sub-{p}.html").is_file()


def test_read_only_input_is_never_modified(shared):
    ds = shared["ds"]
    assert tree_state(ds) == shared["before"]        # content, permissions, no new file
    assert not any(p.name.endswith((".db", ".sqlite")) for p in ds.rglob("*"))
    mode = stat.S_IMODE((ds / "participants.tsv").stat().st_mode)
    assert mode == 0o444


def test_per_voxel_problems_are_nan_counted_and_reported(shared):
    res, planted, out = shared["results"]["02"], shared["planted"], shared["out"]
    assert res.code == 0
    log = next((out / "logs").glob("sub-02_*.log")).read_text()
    expected = [f"{planted['t1w']}: {NAN_BLOCK} non-finite voxels (NaN/Inf) of",
                f"{planted['vfa']}: {planted['n_slab']} non-finite voxels (NaN/Inf) of"]
    for text in expected:
        assert text in res.out and text in log
    failed = re.search(rf"{planted['pre_vfa']}: the VFA fit failed in (\d+) of (\d+) voxels",
                       res.out)
    assert failed and int(failed.group(1)) >= NAN_BLOCK, res.out[-3000:]
    assert failed.group(0) in log
    anat = out / "sub-02" / "ses-inj" / "anat"
    brain = np.asarray(nib.load(str(next((out / "sub-02" / "anat").glob(
        "*desc-brain_mask.nii.gz")))).dataobj) > 0
    t1_post = np.asarray(nib.load(str(next(anat.glob("*ce-AGuIX_space-T1w_T1map.nii.gz")))).dataobj)
    t1_pre = np.asarray(nib.load(str(next((out / "sub-02" / "ses-pre" / "anat").glob(
        "sub-02_ses-pre_space-T1w_T1map.nii.gz")))).dataobj)
    nan_post, nan_pre = np.isnan(t1_post[brain]).mean(), np.isnan(t1_pre[brain]).mean()
    assert nan_post > 0.2 and nan_pre < 0.05, (nan_post, nan_pre)  # the NaN half of one flip
    finite = t1_post[brain & np.isfinite(t1_post)]
    assert finite.size and (finite > 0).all()
    rows = read_tsv(out / "sub-02" / "sub-02_desc-lesions_stats.tsv")
    inj = [r for r in rows if r["session_id"] == "ses-inj"]
    assert inj
    for r in rows:
        assert int(r["n_voxels_conc"]) <= int(r["n_voxels"])
        assert (r["conc_mean_mM"] == "n/a") == (int(r["n_voxels_conc"]) == 0)
    assert any(int(r["n_voxels_conc"]) < int(r["n_voxels"]) for r in inj)


# ------------------------------------------------------------------------------- privacy

def _text_of_png(data: bytes) -> str:
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind in (b"tEXt", b"iTXt"):
            out.append(chunk.decode("latin-1"))
        elif kind == b"zTXt":
            key, _, rest = chunk.partition(b"\0")
            out.append(key.decode("latin-1") + zlib.decompress(rest[1:]).decode("latin-1"))
        pos += 12 + length
    return "\n".join(out)


_DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+")


def searchable_text(p: Path) -> str:
    """What a person or a tool could read in the file: text (without base64 images), PNG text
    chunks, NIfTI header and extensions (not the voxel data), decompressed pickles."""
    data = p.read_bytes()
    name = p.name
    if name.endswith((".nii.gz", ".nii")):
        raw = gzip.decompress(data) if name.endswith(".gz") else data
        hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw))
        return raw[: int(hdr["vox_offset"])].decode("latin-1")
    if name.endswith(".png"):
        return _text_of_png(data)
    if name.endswith((".pklz", ".gz")):
        data = gzip.decompress(data)
    text = data.decode("utf-8", errors="replace")
    if name.endswith((".html", ".svg", ".htm")):
        text = _DATA_URI.sub("", text)
    return text


def tokens(ds: Path) -> list[str]:
    """The identifying field names, and every value of at least 5 characters planted in any
    input sidecar (PatientID, AcquisitionDateTime... differ between participants and sessions)."""
    out = set(IDENTIFYING)
    for f in ds.rglob("*.json"):
        meta = json.loads(f.read_text())
        for k in IDENTIFYING:
            v = meta.get(k) if isinstance(meta, dict) else None
            if isinstance(v, str) and len(v) >= 5:
                out.add(v)
    return sorted(out)


def leaks(root: Path, toks) -> list[str]:
    found = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        text = searchable_text(p)
        for t in toks:
            if t in text:
                found.append(f"{p.relative_to(root)}: {t}")
    return found


def test_no_identifying_metadata_reaches_outputs_logs_or_reports(shared):
    toks = tokens(shared["ds"])
    values = set(toks) - set(IDENTIFYING)
    assert {shared["sidecar"]["PatientName"], "NANORAD-02"} <= values   # values are searched too
    assert shared["group"].code == 0, shared["group"].err
    assert (shared["out"] / "group").is_dir()
    assert leaks(shared["out"], toks) == []
    for res in list(shared["results"].values()) + [shared["group"]]:
        assert not [t for t in toks if t in res.out + res.err]


def test_no_absolute_host_path_in_any_output(shared):
    """No JSON, TSV, Markdown or HTML output (sidecars, tables, reports, group level) names the
    folders of the machine that ran it: links to the input are relative (docs/outputs.md)."""
    from testkit import host_paths, unresolved_links

    out = shared["out"]
    assert shared["group"].code == 0, shared["group"].err
    assert host_paths(out, [shared["root"], shared["ds"], out, shared["work"]]) == []
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetLinks"] == {"raw": "../bids"}
    assert unresolved_links(out) == []


def test_the_bids_validator_finds_no_error_in_participant_and_group_outputs(shared):
    """Reports, logs, group tables and the hidden work dir included (OUTPUT_DIR/.work)."""
    from testkit import run_bids_validator, undocumented_warnings

    assert shared["group"].code == 0, shared["group"].err
    res = run_bids_validator(shared["out"])
    assert res.errors == [], res.errors
    assert res.code == 0
    assert undocumented_warnings(res) == [], "list them in docs/outputs.md with why they are left"
    print("validator warnings:", res.warning_codes())


def test_no_identifying_metadata_in_the_work_dir(shared):
    assert leaks(shared["work"], tokens(shared["ds"])) == []


def test_output_sidecars_copy_only_allow_listed_input_fields(shared):
    """Allow-list, not deny-list: of the keys the input sidecars hold, an output sidecar may only
    carry the allow-listed acquisition fields and the app's own fields of the same name."""
    from bids_agquant.bids import columns as C
    from bids_agquant.bids.derivatives import SIDECAR_ALLOW_LIST
    from bids_agquant.bids.layout import NUMERIC_COVARIATES, TEXT_COVARIATES

    # the app's own fields that inputs may hold too; covariates are an allow-list of their own
    # ("Type": the BIDS mask type of the brain mask's sidecar, which the app writes itself)
    own = ({"Description", "Sources", "Units", "FlipAngle", "Type"}
           | set(C.columns(C.LESION_TABLE)) | set(NUMERIC_COVARIATES) | set(TEXT_COVARIATES))
    input_keys = set()
    for f in shared["ds"].rglob("*.json"):
        meta = json.loads(f.read_text())
        input_keys |= set(meta) if isinstance(meta, dict) else set()
    assert set(IDENTIFYING) <= input_keys and "SeriesDescription" in input_keys
    copied = {}
    for f in shared["out"].rglob("*.json"):
        if f.name == "dataset_description.json" or ".work" in f.parts:
            continue
        meta = json.loads(f.read_text())
        for k in set(meta) & input_keys - set(SIDECAR_ALLOW_LIST) - own:
            copied.setdefault(k, str(f.relative_to(shared["out"])))
    assert copied == {}
    flips = [json.loads(f.read_text())["FlipAngle"]
             for f in shared["out"].rglob("*_T1map.json")]
    assert flips and all(isinstance(v, list) for v in flips)      # the app's, not the input's


def test_the_privacy_search_finds_what_it_looks_for(shared, tmp_path):
    """The search reaches NIfTI header fields, PNG text and text files (else it proves nothing)."""
    toks = tokens(shared["ds"])
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header["descrip"] = b"DOE^JANE"
    nib.save(img, str(tmp_path / "a.nii.gz"))
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientBirthDate"))
    nib.save(img, str(tmp_path / "b.nii.gz"))
    (tmp_path / "c.html").write_text("<p>InstitutionAddress</p><img src='data:image/png;base64,"
                                     "QUJD'>")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    fig.savefig(tmp_path / "d.png", metadata={"Author": "DeviceSerialNumber"})
    plt.close(fig)
    found = leaks(tmp_path, toks)
    assert [f.split(":")[0] for f in found] == ["a.nii.gz", "b.nii.gz", "c.html", "d.png"]


# --------------------------------------------------------------------------- group level

def test_group_level_with_malformed_covariates_warns_and_skips(shared, tmp_path):
    """participants.tsv with a non-numeric dose, a negative one, a missing weight and a
    duplicated row: exit 0, one warning each, the outputs still complete."""
    ds = rk.copy_dataset(shared["ds"], tmp_path / "bids")
    set_read_only(ds, False)
    (ds / "participants.tsv").write_text(
        "participant_id\tdose_mg_per_kg\tweight_kg\tprimary_tumor\n"
        "sub-01\tfifty\t70\tNSCLC\nsub-02\t-100\tn/a\tmelanoma\nsub-02\t100\t60\tmelanoma\n")
    out = tmp_path / "out"
    shutil.copytree(shared["out"], out, ignore=shutil.ignore_patterns("group", "logs"))
    res = finish(cli(ds, out, "group"))
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    for text in ("dose_mg_per_kg of sub-01 is 'fifty', not a number",
                 "dose_mg_per_kg of sub-02 is '-100', not a positive number",
                 "participants.tsv has several rows for sub-02; using the first"):
        assert text in res.out, res.out[-3000:]
    assert check_complete(out / "group", skip=()) == []


def test_group_level_with_a_truncated_lesion_table(shared, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(shared["out"], out, ignore=shutil.ignore_patterns("group", "logs"))
    table = out / "sub-01" / "sub-01_desc-lesions_stats.tsv"
    lines = table.read_text().splitlines(keepends=True)
    assert len(lines) >= 3
    table.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])   # a copy cut short
    res = finish(cli(shared["ds"], out, "group"))
    assert res.code == 65, (res.code, res.err)
    line = res.err.splitlines()[0]
    assert line.startswith("bids-agquant: error: ") and "sub-01_desc-lesions_stats.tsv" in line
    assert "line 3:" in line and "truncated" in line and "rerun the participant level" in line
    assert "; " in line and "Traceback" not in res.err
    assert not (out / "group").exists() or check_complete(out / "group", skip=()) == []


# ------------------------------------------------------------------------ kill and resume

def _n_results(work: Path) -> int:
    return sum(1 for _ in work.rglob("result_*.pklz"))


def _n_outputs(out: Path) -> int:
    return sum(1 for _ in (out / "sub-01").rglob("*.nii.gz")) if (out / "sub-01").is_dir() else 0


def _run_and_kill(ds, out, work, ready, what):
    """Run sub-01, SIGKILL its process group once ``ready()``; the finished node count."""
    proc = cli(ds, out, "participant", "--participant-label", "01", "-w", work, "--nprocs", "2",
               start_new_session=True)
    while proc.poll() is None and not ready():
        time.sleep(0.02)
    if proc.poll() is not None:
        res = finish(proc)
        pytest.fail(f"the run ended (exit {res.code}) before {what}: {res.err}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return _n_results(work)


def test_sigkill_and_resume_give_the_uninterrupted_outputs(shared, tmp_path):
    ds, ref = shared["ds"], shared["out"]
    out, work = tmp_path / "out", tmp_path / "work"
    t0 = time.monotonic()
    table = out / "sub-01" / "sub-01_desc-lesions_stats.tsv"
    n1 = _run_and_kill(ds, out, work, lambda: _n_results(work) >= 3, "3 nodes finished")
    assert not table.exists() and check_complete(out) == []
    n2 = _run_and_kill(ds, out, work, lambda: _n_outputs(out) > 0, "an output was written")
    assert _n_outputs(out) > 0 and not table.exists()                      # killed mid-way
    assert check_complete(out) == [], "a half-written file is visible under its final name"
    left = temp_files(out / "sub-01")            # SIGKILL can leave the writers' temp files
    res = finish(cli(ds, out, "participant", "--participant-label", "01", "-w", work,
                     "--nprocs", "2"))
    elapsed = time.monotonic() - t0
    assert res.code == 0, (res.err, res.out[-3000:])
    assert re.search(r"\] \S+: cached", res.out), "the resumed run recomputed everything"
    print(f"kill/resume: killed after {n1} and {n2} finished nodes ({len(left)} temporary "
          f"file(s) left); {elapsed:.0f} s in all")
    assert tree_state(ds) == shared["before"]
    assert check_complete(out) == []
    assert temp_files(out / "sub-01") == [], "temporary files of the killed runs are left"
    if left:
        assert f"removed {len(left)} temporary file(s) left by an interrupted run" in res.out

    assert_same_participant_outputs(ref, out, "01")


def assert_same_participant_outputs(ref: Path, out: Path, participant: str):
    """The same files, and in them the same arrays and bytes, as an uninterrupted run."""
    got = sorted(p.relative_to(out) for p in (out / f"sub-{participant}").rglob("*")
                 if p.is_file())
    want = sorted(p.relative_to(ref) for p in (ref / f"sub-{participant}").rglob("*")
                  if p.is_file())
    assert got == want
    for rel in want:
        a, b = ref / rel, out / rel
        if rel.name.endswith(".nii.gz"):
            ia, ib = nib.load(str(a)), nib.load(str(b))
            assert np.array_equal(np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj),
                                  equal_nan=True), rel
            assert np.array_equal(ia.affine, ib.affine), rel
            assert ia.get_data_dtype() == ib.get_data_dtype(), rel
        else:                                # lesion table, sidecars, dseg look-up, transforms
            assert a.read_bytes() == b.read_bytes(), rel


# ------------------------------------------------------------------------------ disk full

def _file_size_limit(n_bytes):
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return apply


def test_no_space_for_a_file_is_one_line_and_leaves_no_partial_output(shared, tmp_path):
    """Every file above 400 kB fails to write (as on a full disk or an exhausted quota): the run
    stops with one line naming the error, the input is untouched, and no output file is half
    written; rerunning without the limit resumes."""
    out, work = tmp_path / "out", tmp_path / "work"
    proc = cli(shared["ds"], out, "participant", "--participant-label", "01", "-w", work,
               "--nprocs", "2", preexec_fn=_file_size_limit(400_000))
    res = finish(proc)
    assert res.code == 73, (res.code, res.err)               # cannot create output
    line = res.err.splitlines()[0]
    assert line.startswith("bids-agquant: error: ") and "File too large" in line, res.err
    assert "could not write its files" in line and "to resume" in line, line
    assert "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert tree_state(shared["ds"]) == shared["before"]
    assert check_complete(out) == []


def _mount_tmpfs(path: Path, size: str):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small tmpfs (a disk that really fills up) needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def test_a_full_disk_ends_with_73_and_a_rerun_with_room_resumes(shared, tmp_path):
    """Output and work dir on a 3 MB filesystem that fills up mid-run: the run ends (nipype's
    MultiProc used to wait for ever when a worker could not write a node's result file) with
    exit 73 and one line naming the full disk; nothing half-written is visible; once there is
    room, the same command resumes and gives the outputs of an uninterrupted run."""
    tiny = tmp_path / "tiny"
    _mount_tmpfs(tiny, "3m")
    try:
        out, work = tiny / "out", tiny / "work"
        args = (shared["ds"], out, "participant", "--participant-label", "01", "-w", work,
                "--nprocs", "2")
        res = finish(cli(*args), timeout=600)
        assert res.code == 73, (res.code, res.err[-3000:])
        lines = res.err.strip().splitlines()
        assert len(lines) == 1, res.err[-3000:]
        assert "No space left on device" in lines[0] and "to resume" in lines[0], lines[0]
        assert check_complete(out) == []
        assert not (out / "sub-01" / "sub-01_desc-lesions_stats.tsv").exists()
        assert tree_state(shared["ds"]) == shared["before"]

        subprocess.run(["mount", "-o", "remount,size=400m", str(tiny)], check=True)
        res = finish(cli(*args), timeout=900)
        assert res.code == 0, (res.err, res.out[-3000:])
        assert re.search(r"\] \S+: cached", res.out), "the rerun recomputed everything"
        assert check_complete(out) == []
        assert_same_participant_outputs(shared["out"], out, "01")
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)
