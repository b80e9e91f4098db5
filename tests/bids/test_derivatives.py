"""BIDS-Derivatives output: names, schema rules, sidecar allow-list, atomic and concurrent writes."""
from __future__ import annotations

import fnmatch
import json
import multiprocessing as mp
import os
import re
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_agquant.bids import columns as C
from bids_agquant.bids import atomic, derivatives as D
from bids_agquant.bids import tables as T

VFA = "/data/sub-01/ses-D1/anat/sub-01_ses-D1_acq-fast_ce-AGuIX_flip-3_VFA.nii.gz"
T1W = "/data/sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_T1w.nii.gz"


# ------------------------------------------------------------------------------------ names

def test_map_names_keep_source_entities_drop_per_volume_ones():
    assert str(D.derivative_path("T1map", VFA)) == \
        "sub-01/ses-D1/anat/sub-01_ses-D1_acq-fast_ce-AGuIX_space-T1w_T1map.nii.gz"
    assert str(D.derivative_path("delta_r1", VFA)).endswith(
        "sub-01_ses-D1_acq-fast_ce-AGuIX_space-T1w_desc-delta_R1map.nii.gz")
    assert str(D.derivative_path("concentration", VFA)).endswith("_space-T1w_Conc.nii.gz")
    assert str(D.derivative_path("xfm_vfa", VFA)).endswith(
        "sub-01_ses-D1_acq-fast_ce-AGuIX_from-VFA_to-T1w_mode-image_xfm.mat")
    assert str(D.derivative_path("xfm_t1w", T1W)).endswith(
        "sub-01_ses-D1_ce-AGuIX_from-orig_to-T1w_mode-image_xfm.mat")
    assert str(D.participant_path("lesion_table", "07")) == "sub-07/sub-07_desc-lesions_stats.tsv"
    assert str(D.participant_path("lesion_dseg", "07")) == \
        "sub-07/anat/sub-07_space-T1w_desc-lesions_dseg.nii.gz"


def test_entity_order_is_bids_order_whatever_the_input_order():
    name = D.format_bids_name({"desc": "x", "space": "T1w", "ce": "AGuIX", "ses": "A", "sub": "1",
                               "run": "2"}, "R1map", ".nii.gz")
    assert name == "sub-1_ses-A_ce-AGuIX_run-2_space-T1w_desc-x_R1map.nii.gz"
    with pytest.raises(ValueError, match="alphanumeric"):
        D.format_bids_name({"sub": "0_1"}, "T1map")


def test_parse_rejects_non_bids_names():
    ents, suffix, ext = D.parse_bids_name(VFA)
    assert ents == {"sub": "01", "ses": "D1", "acq": "fast", "ce": "AGuIX", "flip": "3"}
    assert (suffix, ext) == ("VFA", ".nii.gz")
    with pytest.raises(ValueError):
        D.parse_bids_name("/x/not a bids name.nii.gz")


def _schema_regexes():
    """Regexes of every BIDS file rule incl. the derivative rules (bidsschematools)."""
    import bidsschematools as bst
    from bidsschematools import rules, schema

    sch = schema.load_schema()
    regexes = []
    for group in (sch.rules.files.common, sch.rules.files.raw, sch.rules.files.deriv):
        regexes += [r["regex"] for r in rules.regexify_filename_rules(group, sch, level=2)]
    assert bst.__version__
    return [re.compile(r"(?:.*/)?" + r) for r in regexes]


def _all_output_examples():
    """One example path of every output kind, from both a VFA and a T1w source."""
    out = []
    for key, spec in D.OUTPUTS.items():
        if spec.level == "subject" or key.startswith(("lesion_dseg", "control_dseg",
                                                      "brain_mask")):
            out.append((key, D.participant_path(key, "01")))
        else:
            out.append((key, D.derivative_path(key, VFA)))
            out.append((key, D.derivative_path(key, T1W)))
    return out


def test_standard_outputs_pass_schema_derivative_rules_and_custom_ones_are_bidsignored():
    regexes = _schema_regexes()
    for key, path in _all_output_examples():
        p = "/" + str(path)
        valid = any(r.match(p) for r in regexes)
        ignored = any(fnmatch.fnmatch(path.name, pat) for pat in D.BIDSIGNORE)
        if D.OUTPUTS[key].custom:
            assert ignored, f"custom output {path} is not covered by .bidsignore"
            # its sidecar too
            side = path.name.split(".")[0] + ".json"
            assert any(fnmatch.fnmatch(side, pat) for pat in D.BIDSIGNORE), side
        else:
            assert valid, f"{path} does not pass the BIDS schema derivative rules"
            assert not ignored


def test_a_bad_name_fails_the_schema_check():
    """The check above can fail: a typo'd suffix does not match any rule."""
    regexes = _schema_regexes()
    assert not any(r.match("/sub-01/anat/sub-01_space-T1w_T1mapp.nii.gz") for r in regexes)
    assert any(r.match("/sub-01/anat/sub-01_space-T1w_T1map.nii.gz") for r in regexes)


# ---------------------------------------------------------------------------------- URIs

def test_bids_uri_picks_the_deepest_dataset(tmp_path):
    raw = tmp_path / "raw"
    masks = raw / "derivatives" / "masks"
    roots = {"raw": raw, "lesions": masks, "": tmp_path / "out"}
    assert D.bids_uri(raw / "sub-01/anat/x_T1w.nii.gz", roots) == \
        "bids:raw:sub-01/anat/x_T1w.nii.gz"
    assert D.bids_uri(masks / "sub-01/anat/m_mask.nii.gz", roots) == \
        "bids:lesions:sub-01/anat/m_mask.nii.gz"
    assert D.bids_uri(tmp_path / "out" / "sub-01" / "t.tsv", roots) == "bids::sub-01/t.tsv"
    assert D.bids_uri(tmp_path / "elsewhere.nii", roots).startswith("file://")


def _raw(root: Path, **desc) -> Path:
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "raw", "BIDSVersion": "1.10.0", **desc}))
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"EchoTime": 0.003}')
    return root


def _resolve(link: str, output_dir: Path) -> Path:
    """A DatasetLinks value without a scheme resolves against the dataset root (BIDS spec)."""
    assert ":" not in link.split("/")[0], link
    return (output_dir / link).resolve()


def test_dataset_link_is_relative_when_the_output_is_inside_or_beside_the_input(tmp_path):
    raw = _raw(tmp_path / "study" / "rawdata")
    inside = raw / "derivatives" / "bids_agquant"
    beside = tmp_path / "study" / "derivatives" / "bids_agquant"
    sibling = tmp_path / "demo_out"
    assert D.dataset_link(raw, inside) == "../.."
    assert D.dataset_link(raw, beside) == "../../rawdata"
    assert D.dataset_link(raw, sibling) == "../study/rawdata"
    for out in (inside, beside, sibling):
        link = D.dataset_link(raw, out)
        assert _resolve(link, out) == raw.resolve()
        assert str(tmp_path) not in link and not link.startswith("/")


def test_dataset_link_far_away_names_the_dataset_not_its_place(tmp_path):
    """Input and output share only the file-system root (container mounts /data, /out): the DOI
    when the dataset has one, else a content identity equal on every copy of it."""
    raw = _raw(tmp_path / "raw")
    far = Path(tmp_path.anchor) / "nonexistent_out_dir_for_a_test"
    link = D.dataset_link(raw, far)
    assert link.startswith("ni:///sha-256;") and str(tmp_path) not in link
    copy = tmp_path / "elsewhere" / "copy_of_raw"
    import shutil
    shutil.copytree(raw, copy)
    assert D.dataset_identity(copy) == link                    # the place does not enter
    (copy / "derivatives" / "x").mkdir(parents=True)             # nor derivatives, hidden files
    (copy / "derivatives" / "x" / "a.json").write_text("{}")
    (copy / ".git").mkdir()
    assert D.dataset_identity(copy) == link
    (copy / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"EchoTime": 0.004}')
    assert D.dataset_identity(copy) != link                    # the content does
    doi = _raw(tmp_path / "with_doi", DatasetDOI="10.18112/openneuro.ds000001.v1.0.0")
    assert D.dataset_link(doi, far) == "doi:10.18112/openneuro.ds000001.v1.0.0"
    desc = D.dataset_description(dataset_links={"raw": doi}, output_dir=far)
    assert desc["DatasetLinks"] == {"raw": "doi:10.18112/openneuro.ds000001.v1.0.0"}
    assert desc["SourceDatasets"] == [{"URL": "doi:10.18112/openneuro.ds000001.v1.0.0"}]


def test_dataset_description_links_and_sources_carry_no_host_path(tmp_path):
    raw = _raw(tmp_path / "bids", DatasetDOI="doi:10.5281/zenodo.1")
    out = tmp_path / "out"
    D.ensure_dataset_description(out, dataset_links={"raw": raw})
    text = (out / "dataset_description.json").read_text()
    desc = json.loads(text)
    assert desc["DatasetLinks"] == {"raw": "../bids"}
    assert desc["SourceDatasets"] == [{"URL": "../bids", "DOI": "doi:10.5281/zenodo.1"}]
    assert str(tmp_path) not in text and "file:" not in text
    with pytest.raises(ValueError, match="output_dir"):
        D.dataset_description(dataset_links={"raw": raw})


def test_a_rerun_replaces_the_host_path_links_an_earlier_version_wrote(tmp_path):
    raw = _raw(tmp_path / "bids")
    out = tmp_path / "out"
    out.mkdir()
    old = {"Name": "kept", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
           "DatasetLinks": {"raw": raw.as_uri()}, "SourceDatasets": [{"URL": raw.as_uri()}]}
    (out / "dataset_description.json").write_text(json.dumps(old))
    D.ensure_dataset_description(out, dataset_links={"raw": raw})
    new = json.loads((out / "dataset_description.json").read_text())
    assert new == {**old, "DatasetLinks": {"raw": "../bids"},
                   "SourceDatasets": [{"URL": "../bids"}]}
    # portable links (or none) are the user's business: kept as they are
    (out / "dataset_description.json").write_text(json.dumps({**old, "DatasetLinks": {
        "raw": "doi:10.1/x"}}))
    D.ensure_dataset_description(out, dataset_links={"raw": raw})
    assert json.loads((out / "dataset_description.json").read_text())["DatasetLinks"] == {
        "raw": "doi:10.1/x"}


def test_readme_is_written_once_and_names_every_described_output(tmp_path):
    D.ensure_readme(tmp_path)
    text = (tmp_path / D.README_NAME).read_text()
    for key, spec in D.OUTPUTS.items():
        if spec.description:
            assert spec.description in text, key
    (tmp_path / D.README_NAME).write_text("kept")
    D.ensure_readme(tmp_path)
    assert (tmp_path / D.README_NAME).read_text() == "kept"
    other = tmp_path / "other"
    other.mkdir()
    (other / "README").write_text("theirs")
    assert D.ensure_readme(other) == other / "README"
    assert not (other / D.README_NAME).exists()


def test_map_sidecars_say_not_skull_stripped_segmentations_do_not():
    for key, spec in D.OUTPUTS.items():
        side = D.describe(key)
        is_map = spec.extension == ".nii.gz" and spec.suffix not in D.SEGMENTATION_SUFFIXES
        assert ("SkullStripped" in side) == is_map, key
        if is_map:
            assert side["SkullStripped"] is False


def test_find_dataset_root(tmp_path):
    (tmp_path / "ds" / "sub-01" / "anat").mkdir(parents=True)
    (tmp_path / "ds" / "dataset_description.json").write_text("{}")
    assert D.find_dataset_root(tmp_path / "ds" / "sub-01" / "anat" / "f.nii") == tmp_path / "ds"


# ------------------------------------------------------------------------------- sidecars

def test_only_allow_listed_input_metadata_is_copied(tmp_path):
    img = tmp_path / "sub-01_ses-D1_flip-1_VFA.nii.gz"
    img.write_bytes(b"")
    sidecar = {"PatientName": "Doe^Jane", "PatientBirthDate": "19600101",
               "InstitutionName": "Hospital", "AcquisitionDateTime": "2020-01-01T10:00:00",
               "DeviceSerialNumber": "12345", "StationName": "MR1", "PatientID": "X",
               "MagneticFieldStrength": 3, "FlipAngle": 5, "RepetitionTimeExcitation": 0.006,
               "Manufacturer": "Siemens", "EchoTime": 0.0025}
    (tmp_path / "sub-01_ses-D1_flip-1_VFA.json").write_text(json.dumps(sidecar))
    kept = D.allowed_metadata(D.read_sidecar(img))
    assert kept == {"MagneticFieldStrength": 3, "Manufacturer": "Siemens", "EchoTime": 0.0025,
                    "RepetitionTimeExcitation": 0.006}
    assert not set(kept) - set(D.SIDECAR_ALLOW_LIST)


# ------------------------------------------------------------------------ atomic writes

def _leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def test_atomic_writes_leave_no_temp_and_keep_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub-01" / "a.json"
    D.write_json(target, {"a": 1, "nan": float("nan"), "p": Path("/x")})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None, "p": "/x"}

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        D.write_json(target, {"a": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text())["a"] == 1          # old content intact
    assert _leftovers(target.parent) == []                   # temp file removed


def test_write_nifti_atomic_roundtrip(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data[0, 0, 0] = np.nan
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    out = D.write_nifti(tmp_path / "m_T1map.nii.gz", nib.Nifti1Image(data, aff))
    back = nib.load(out)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_array_equal(back.affine, aff)
    assert _leftovers(tmp_path) == []
    with open(out, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"                     # gzip


def _race(args):
    folder, barrier = args
    barrier.wait()
    D.ensure_dataset_description(folder, dataset_links={"raw": Path("/data/raw")})
    D.update_bidsignore(folder)
    return json.loads((Path(folder) / "dataset_description.json").read_text())


def test_many_jobs_create_dataset_description_at_once(tmp_path):
    n = 12
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            seen = pool.map(_race, [(str(tmp_path), barrier)] * n)
    final = json.loads((tmp_path / "dataset_description.json").read_text())
    assert all(s == final for s in seen)          # everyone read a complete, identical file
    assert final["DatasetType"] == "derivative"
    assert final["DatasetLinks"] == {"raw": D.dataset_link("/data/raw", tmp_path)}
    assert "/data/raw" not in json.dumps(final)
    assert _leftovers(tmp_path) == []
    lines = (tmp_path / ".bidsignore").read_text().splitlines()
    assert sorted(lines) == sorted(D.BIDSIGNORE)


def test_dataset_description_records_stack_versions_and_container(tmp_path, monkeypatch):
    monkeypatch.setenv("BIDS_AGQUANT_CONTAINER_TYPE", "apptainer")
    monkeypatch.setenv("BIDS_AGQUANT_CONTAINER_TAG", "bids_agquant_0.1.0.sif")
    desc = D.dataset_description()
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "bids_agquant"
    assert gen["Container"] == {"Type": "apptainer", "Tag": "bids_agquant_0.1.0.sif"}
    for dist in ("numpy", "scipy", "nibabel", "antspyx", "nipype", "pybids"):
        v = metadata.version(dist)
        assert desc["SoftwareVersions"][dist] == v
        assert f"{dist}=={v}" in gen["Description"]
    # an existing file is never overwritten
    (tmp_path / "dataset_description.json").write_text('{"Name": "kept"}')
    D.ensure_dataset_description(tmp_path)
    assert json.loads((tmp_path / "dataset_description.json").read_text()) == {"Name": "kept"}


def test_bidsignore_merges_with_existing_lines(tmp_path):
    (tmp_path / ".bidsignore").write_text("extra/\n*_SEmap.nii.gz\n")
    D.update_bidsignore(tmp_path)
    D.update_bidsignore(tmp_path)
    lines = (tmp_path / ".bidsignore").read_text().splitlines()
    assert lines[0] == "extra/"
    assert len(lines) == len(set(lines)) == len(set(D.BIDSIGNORE) | {"extra/"})


def test_tsv_cells():
    f = T.format_cell
    assert [f(None), f(float("nan")), f(True), f(False), f(np.float32(0.5)), f(3), f("")] == \
        ["n/a", "n/a", "true", "false", "0.5", "3", "n/a"]
    assert [f(np.bool_(True)), f(np.int64(115)), f(float("-inf")), f("a\tb")] == \
        ["true", "115", "n/a", "a b"]
    assert float(f(1.2345678901234e-7)) == pytest.approx(1.2345678901234e-7, rel=1e-6)
    # 6 significant digits; integer-valued floats print as integers
    assert [f(919.9999973109889), f(3.0), f(1234567.0), f(0.0123456789), f(-2.5e-7)] == \
        ["920", "3", "1234567", "0.0123457", "-2.5e-07"]


def test_lesion_table_columns_cover_the_interface_and_have_a_dictionary():
    required = ["participant_id", "session_id", "contrast_agent", "lesion_id",
                "longest_diameter_mm", "measurable", "volume_mm3", "se_mean_percent",
                "se_sd_percent", "t1_pre_mean_s", "t1_post_mean_s", "delta_r1_mean_per_s",
                "conc_mean_mM", "conc_sd_mM", "conc_mean_mg_per_L", "n_voxels"]
    columns = C.columns(C.LESION_TABLE)
    assert list(columns[:len(required)]) == required
    dictionary = C.dictionary(C.LESION_TABLE)
    assert list(dictionary) == list(columns)
    assert all(v["Description"] for v in dictionary.values())


def test_pybids_indexes_a_written_derivative_dataset(tmp_path):
    from bids import BIDSLayout

    raw = tmp_path / "raw"
    (raw / "sub-01" / "ses-D1" / "anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text(json.dumps(
        {"Name": "raw", "BIDSVersion": "1.10.0"}))
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    nib.save(img, raw / "sub-01/ses-D1/anat/sub-01_ses-D1_ce-AGuIX_T1w.nii.gz")
    out = tmp_path / "out"
    D.ensure_dataset_description(out, dataset_links={"raw": raw})
    D.update_bidsignore(out)
    for key in ("T1map", "R1map", "delta_r1", "concentration"):
        p = out / D.derivative_path(key, VFA)
        D.write_nifti(p, img)
        D.write_json(p.with_name(p.name.replace(".nii.gz", ".json")), {"Units": "s"})
    layout = BIDSLayout(raw, derivatives=out, validate=False)
    deriv = layout.derivatives.get_pipeline("bids_agquant")
    assert deriv.get(suffix="T1map", extension=".nii.gz")[0].entities["space"] == "T1w"
    assert deriv.get(suffix="R1map", desc="delta", extension=".nii.gz")
    assert deriv.get(suffix="Conc", ceagent="AGuIX", extension=".nii.gz")
    assert deriv.get(suffix="T1map", extension=".nii.gz")[0].get_metadata()["Units"] == "s"


def test_pybids_skips_logs_group_and_reports_with_the_ignore_list(tmp_path):
    """pybids reads no .bidsignore: a plain layout indexes logs/, group/ and the reports with
    junk entities (a timestamp as suffix); with :func:`pybids_ignore` it indexes only BIDS."""
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    raw = tmp_path / "raw"
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text(json.dumps(
        {"Name": "raw", "BIDSVersion": "1.10.0"}))
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    nib.save(img, raw / "sub-01/anat/sub-01_T1w.nii.gz")
    out = tmp_path / "out"
    D.ensure_dataset_description(out, dataset_links={"raw": raw})
    map_path = out / D.derivative_path("T1map", "sub-01_flip-1_VFA.nii.gz")
    D.write_nifti(map_path, img)
    extra = [out / "logs" / "sub-01_20260101T120000.log", out / "group" / "report.html",
             out / "group" / "dose_response_tests.tsv", out / "sub-01.html"]
    for f in extra:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")

    def indexed(**kw):
        layout = BIDSLayout(raw, derivatives=out, validate=False, **kw)
        return {Path(f.path).relative_to(out).as_posix()
                for f in layout.derivatives.get_pipeline("bids_agquant").get()}

    plain = indexed()
    assert {f.relative_to(out).as_posix() for f in extra} <= plain   # why the list is needed
    clean = indexed(indexer=BIDSLayoutIndexer(validate=False, ignore=D.pybids_ignore()))
    assert clean == {"dataset_description.json", map_path.relative_to(out).as_posix()}
    layout = BIDSLayout(raw, validate=False,
                        indexer=BIDSLayoutIndexer(validate=False, ignore=D.pybids_ignore()))
    assert [f.filename for f in layout.get(extension=".nii.gz")] == ["sub-01_T1w.nii.gz"]


def test_remove_stale_temporaries_removes_only_the_writers_leftovers(tmp_path):
    sub = tmp_path / "sub-01" / "anat"
    fd, left = atomic._temp_in(sub / "sub-01_T1map.nii.gz", ".nii.gz")   # as a killed writer leaves it
    os.close(fd)
    fd, report_tmp = atomic._temp_in(tmp_path / "sub-01.html")
    os.close(fd)
    fd, other_tmp = atomic._temp_in(tmp_path / "sub-02.html")
    os.close(fd)
    kept = [sub / ".keep", sub / "sub-01_T1map.nii.gz", tmp_path / "sub-01.html"]
    for p in kept:
        p.write_text("x")
    found = atomic.remove_stale_temporaries(tmp_path / "sub-01", tmp_path / "sub-01.html")
    assert sorted(map(str, found)) == sorted([left, report_tmp])
    assert not os.path.exists(left) and not os.path.exists(report_tmp)
    assert os.path.exists(other_tmp) and all(p.exists() for p in kept)
    assert atomic.remove_stale_temporaries(tmp_path / "missing") == []


def test_container_type_from_each_engine_s_own_marks(tmp_path):
    """GeneratedBy.Container: docker (/.dockerenv), podman (/run/.containerenv or
    container=podman), Apptainer/Singularity (their variables); the image's tag variable wins."""
    from bids_agquant.bids.derivatives import _container_info
    assert _container_info({}, tmp_path) is None
    (tmp_path / ".dockerenv").write_text("")
    assert _container_info({}, tmp_path) == {"Type": "docker"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text('engine="podman-4.3.1"\n')
    tag = {"BIDS_AGQUANT_CONTAINER_TAG": "bids_agquant:0.1.0"}
    assert _container_info(tag, tmp_path) == {"Type": "podman", "Tag": "bids_agquant:0.1.0"}
    assert _container_info({"container": "podman"}, tmp_path / "none") == {"Type": "podman"}
    sif = {"APPTAINER_CONTAINER": "/images/bids_agquant_0.1.0.sif"}
    assert _container_info(sif, tmp_path) == {"Type": "apptainer",
                                              "Tag": "bids_agquant_0.1.0.sif"}
    assert _container_info({**sif, **tag}, tmp_path)["Tag"] == "bids_agquant:0.1.0"
    assert _container_info({"SINGULARITY_CONTAINER": "/x/app.sif"}, tmp_path) == {
        "Type": "singularity", "Tag": "app.sif"}
