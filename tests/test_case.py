"""Case bundles: round trip, schema, no identifiers, atomic saves, migration, every load error."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import workbench
import workbench.case
from workbench.case import identifiers as case_identifiers
from workbench.case import model, schema, storage
from workbench.case import (
    CURRENT_SCHEMA_VERSION,
    MIGRATIONS,
    SCHEMA_FILES,
    Attachment,
    Case,
    IDENTIFYING_DICOM_ATTRIBUTES,
    FileRef,
    Landmark,
    MriRef,
    SweepRef,
    Target,
    add_file,
    describe_case,
    file_sha256,
    load_case,
    path_sha256,
    save_case,
)
from workbench.errors import CaseBundleError
from workbench.frames import Transform
from workbench.io.plus_config import read_device_set

MRI_BYTES = b"not really a NIfTI volume, but bytes with a digest"
SWEEP_BYTES = b"not really a sequence file either"
DEVICE_SET_BYTES = b"<PlusConfiguration/>"
IMAGE_TO_PROBE = np.array(
    [[0.0, 0.08, 0.0, 11.0], [-0.08, 0.0, 0.0, 50.0], [0.0, 0.0, 0.08, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
REFERENCE_TO_MRI = np.array(
    [[0.0, -1.0, 0.0, 12.5], [1.0, 0.0, 0.0, -40.25], [0.0, 0.0, 1.0, 101.0], [0.0, 0.0, 0.0, 1.0]]
)
SPINE_CONFIG = "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(folder: Path, relative: str, data: bytes) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _full_case(folder: Path) -> Case:
    """A case using every field, with its files written into ``folder``."""
    _put(folder, "mri/t2_sag.nii.gz", MRI_BYTES)
    _put(folder, "sweeps/sweep1.igs.mha", SWEEP_BYTES)
    _put(folder, "device_sets/probe.xml", DEVICE_SET_BYTES)
    return Case(
        case_id="PVB-007",
        title="L3-L4 left paravertebral block",
        created_utc="2024-05-01T09:30:00Z",
        modified_utc="2024-05-01T09:30:00Z",
        mri=MriRef(
            "mri/t2_sag.nii.gz", _sha(MRI_BYTES), "MR", "T2 sagittal", size_px=(320, 320, 40), spacing_mm=(0.6, 0.6, 4.0)
        ),
        sweeps=[
            SweepRef(
                "sweeps/sweep1.igs.mha",
                _sha(SWEEP_BYTES),
                Transform(IMAGE_TO_PROBE, "Image", "Probe"),
                calibration_error_mm=0.58,
                device_set=FileRef("device_sets/probe.xml", _sha(DEVICE_SET_BYTES)),
            )
        ],
        landmarks=[
            Landmark("L4 spinous process", "Mri", (1.5, -20.25, 33.0), pair="L4SP"),
            Landmark("L4 spinous process", "Reference", (10.0, 5.0, -2.5), pair="L4SP"),
            Landmark("L3 spinous process", "Mri", (1.0, -22.0, 70.125)),
        ],
        targets=[Target("left L3-L4", "paravertebral space", (-25.0, 10.5, 52.0))],
        transforms={"ReferenceToMri": Transform(REFERENCE_TO_MRI, "Reference", "Mri")},
        notes="Patient name withheld; see the study log.",
    )


@pytest.fixture
def bundle(tmp_path) -> Path:
    folder = tmp_path / "case"
    save_case(_full_case(folder), folder)
    return folder


def _rewrite(folder: Path, mutate) -> None:
    document = json.loads((folder / "case.json").read_text())
    mutate(document)
    (folder / "case.json").write_text(json.dumps(document))


# -- round trip -------------------------------------------------------------------------


def test_round_trip_keeps_every_value(tmp_path):
    folder = tmp_path / "case"
    original = _full_case(folder)
    saved = save_case(original, folder)
    loaded = load_case(folder)
    assert loaded.to_dict() == saved.to_dict()
    assert np.array_equal(loaded.sweeps[0].image_to_probe.matrix, IMAGE_TO_PROBE)
    assert np.array_equal(loaded.transforms["ReferenceToMri"].matrix, REFERENCE_TO_MRI)
    assert loaded.landmarks[0] == Landmark("L4 spinous process", "Mri", (1.5, -20.25, 33.0), pair="L4SP")
    assert loaded.landmarks[2].pair is None
    assert loaded.targets == [Target("left L3-L4", "paravertebral space", (-25.0, 10.5, 52.0))]
    assert loaded.mri == original.mri
    assert loaded.sweeps[0].device_set == FileRef("device_sets/probe.xml", _sha(DEVICE_SET_BYTES))
    assert loaded.sweeps[0].calibration_error_mm == 0.58
    assert (loaded.case_id, loaded.created_utc, loaded.notes) == ("PVB-007", "2024-05-01T09:30:00Z", original.notes)


def test_save_stamps_a_copy_and_leaves_the_argument_alone(tmp_path):
    folder = tmp_path / "case"
    original = _full_case(folder)
    original.software = "0.0.1"
    saved = save_case(original, folder)
    assert saved is not original
    assert original.modified_utc == "2024-05-01T09:30:00Z" and original.software == "0.0.1"
    assert saved.software == workbench.__version__
    assert saved.modified_utc != original.modified_utc
    assert saved.created_utc == original.created_utc
    assert saved.schema_version == CURRENT_SCHEMA_VERSION == 2


def test_case_json_is_readable_text(bundle):
    text = (bundle / "case.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert '"point_mm": [1.5, -20.25, 33.0]' in text
    assert '"ReferenceToMri": [0.0, -1.0, 0.0, 12.5, 1.0, 0.0, 0.0, -40.25,' in text
    document = json.loads(text)
    assert document["schema_version"] == 2
    assert list(document) == [
        "schema_version", "case_id", "title", "created_utc", "modified_utc", "software",
        "mri", "sweeps", "landmarks", "targets", "transforms", "attachments",
        "registrations", "current_registration_id", "notes",
    ]  # fmt: skip


def test_minimal_case_round_trips(tmp_path):
    saved = save_case(Case(case_id="A"), tmp_path)
    loaded = load_case(tmp_path)
    assert loaded.to_dict() == saved.to_dict()
    assert loaded.mri is None and loaded.sweeps == [] and loaded.transforms == {}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, width=64), min_size=3, max_size=3))  # within 10 m (workbench.validation)
def test_landmark_coordinates_round_trip_exactly(tmp_path_factory, point):
    folder = tmp_path_factory.mktemp("case")
    save_case(Case(case_id="H1", landmarks=[Landmark("p", "Reference", tuple(point))]), folder)
    assert load_case(folder).landmarks[0].point_mm == tuple(point)


def test_real_sweep_and_device_set(tmp_path, shared_data):
    folder = tmp_path / "case"
    sweep_path, sweep_sha = add_file(folder, shared_data / "plus-spine-phantom-freehand/SpinePhantomFreehand.igs.mha", "sweep")
    config_path, config_sha = add_file(folder, shared_data / SPINE_CONFIG, "device_set")
    calibration = read_device_set(folder / config_path).coordinate_definitions[0]
    case = Case(
        case_id="SPINE-PHANTOM",
        sweeps=[SweepRef(sweep_path, sweep_sha, calibration.transform, calibration.error, FileRef(config_path, config_sha))],
    )
    save_case(case, folder)
    loaded = load_case(folder).sweeps[0]
    assert sweep_path == "sweeps/SpinePhantomFreehand.igs.mha"
    assert config_path == "device_sets/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml"
    assert sweep_sha == file_sha256(shared_data / "plus-spine-phantom-freehand/SpinePhantomFreehand.igs.mha")
    assert sweep_sha.startswith("55b500e987a2053a")  # PROVENANCE.md of the shared data
    assert loaded.image_to_probe.matrix[0].tolist() == [-0.00157821, 0.0785919, -0.00803285, 15.3978]
    assert loaded.calibration_error_mm == 1.68149


# -- schema ---------------------------------------------------------------------------------


def _object_schemas(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            yield node
        for value in node.values():
            yield from _object_schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _object_schemas(value)


@pytest.mark.parametrize("version", sorted(SCHEMA_FILES))
def test_schemas_are_draft_2020_12_and_closed(version):
    schema = json.loads((Path(workbench.__file__).parent / "schemas" / SCHEMA_FILES[version]).read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"] == {"const": version}
    objects = list(_object_schemas(schema))
    assert len(objects) == {0: 3, 1: 7, 2: 8}[version]
    assert all(obj["additionalProperties"] is False for obj in objects)


def test_every_older_version_has_a_migration():
    assert set(SCHEMA_FILES) == set(range(CURRENT_SCHEMA_VERSION + 1))
    assert set(MIGRATIONS) == set(range(CURRENT_SCHEMA_VERSION))


# -- package layout -------------------------------------------------------------------------

CASE_PACKAGE = Path(workbench.__file__).parent / "case"


def _workbench_imports(path: Path) -> set[str]:
    """The workbench modules a source file imports (absolute imports, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "workbench":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "workbench")
    return found


def test_package_re_exports_every_public_name_from_its_module():
    for name in workbench.case.__all__:
        obj = getattr(workbench.case, name)
        homes = [module for module in (model, schema, case_identifiers, storage) if getattr(module, name, None) is obj]
        assert homes, name


def test_case_sits_just_above_io():
    above = ("registration", "planning", "widgets", "phantom", "reconstruction", "outcomes", "cli", "demo")
    for path in CASE_PACKAGE.glob("*.py"):
        for module in _workbench_imports(path):
            assert not set(module.split(".")[1:2]) & set(above), (path.name, module)
    assert _workbench_imports(CASE_PACKAGE / "model.py") <= {"workbench", "workbench.errors", "workbench.frames"}


def test_registration_imports_only_the_case_data_classes():
    for path in (Path(workbench.__file__).parent / "registration").rglob("*.py"):
        for module in _workbench_imports(path):
            assert module == "workbench.case.model" or not module.startswith("workbench.case"), (path.name, module)


# -- no identifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "notes", "PatientName=DOE^JOHN"), "notes mentions DICOM identifying attribute PatientName"),
        (lambda c: setattr(c, "title", "patient_id 12345"), "title mentions DICOM identifying attribute PatientID"),
        (lambda c: setattr(c, "notes", "born (0010,0030) 19700101"), "notes mentions DICOM identifying attribute PatientBirthDate"),
        (
            lambda c: c.landmarks.append(Landmark("Institution-Name", "Mri", (0, 0, 0))),
            r"landmarks\[3\].name mentions DICOM identifying attribute InstitutionName",
        ),
        (
            lambda c: c.transforms.update(PatientNameToMri=Transform(np.eye(4), "PatientName", "Mri")),
            "transforms.PatientNameToMri: key names DICOM identifying attribute PatientName",
        ),
    ],
)
def test_save_refuses_dicom_identifiers(tmp_path, change, message):
    folder = tmp_path / "case"
    case = _full_case(folder)
    change(case)
    with pytest.raises(CaseBundleError, match=message) as info:
        save_case(case, folder)
    assert "case bundles hold no patient identifiers" in str(info.value)
    assert not (folder / "case.json").exists()


@pytest.mark.parametrize("keyword", sorted(IDENTIFYING_DICOM_ATTRIBUTES))
def test_every_identifying_attribute_is_refused_by_keyword_and_tag(keyword):
    tag = IDENTIFYING_DICOM_ATTRIBUTES[keyword]
    one_word = keyword in case_identifiers._ONE_WORD_KEYWORDS  # Date, Time, UID...: only as the whole word
    texts = (keyword, f"({tag})", f"( {tag.lower()} )") + (() if one_word else (keyword.lower(), f"my_{keyword}"))
    for text in texts:
        with pytest.raises(CaseBundleError, match=f"notes mentions DICOM identifying attribute {keyword};"):
            case_identifiers.check_no_identifiers({"notes": text}, None)


def test_plain_words_are_not_mistaken_for_identifiers(bundle):
    assert load_case(bundle).notes == "Patient name withheld; see the study log."


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(PatientName="DOE^JOHN"), r"at \(top level\): Additional properties are not allowed \('PatientName'"),
        (lambda d: d["landmarks"][1].update(PatientID="123"), r"at landmarks\[1\]: Additional properties are not allowed \('PatientID'"),
        (lambda d: d["mri"].update(InstitutionName="General"), r"at mri: Additional properties are not allowed \('InstitutionName'"),
    ],
)
def test_schema_has_no_room_for_identifying_fields(bundle, mutate, message):
    _rewrite(bundle, mutate)
    with pytest.raises(CaseBundleError, match=message):
        load_case(bundle)


def test_load_also_refuses_identifiers_in_text(bundle):
    _rewrite(bundle, lambda d: d.update(notes="PatientBirthDate 19700101"))
    with pytest.raises(CaseBundleError, match="notes mentions DICOM identifying attribute PatientBirthDate"):
        load_case(bundle)


# -- atomic save ------------------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_crash_during_save_leaves_the_previous_case_json(bundle, monkeypatch, target):
    before = (bundle / "case.json").read_bytes()
    changed = load_case(bundle)
    changed.notes = "second version"
    monkeypatch.setattr(os, target, _boom)
    with pytest.raises(CaseBundleError, match=r"cannot write case.json \(No space left on device\)"):
        save_case(changed, bundle)
    monkeypatch.undo()
    assert (bundle / "case.json").read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == ["case.json", "device_sets", "mri", "sweeps"]
    assert load_case(bundle).notes == "Patient name withheld; see the study log."


def test_invalid_case_writes_nothing(bundle):
    before = (bundle / "case.json").read_bytes()
    changed = load_case(bundle)
    changed.landmarks.append(Landmark("bad", "Mri", (0.0, float("nan"), 0.0)))
    with pytest.raises(CaseBundleError, match=r"landmarks\[3\].point_mm\[1\] is nan; numbers in case.json must be finite"):
        save_case(changed, bundle)
    assert (bundle / "case.json").read_bytes() == before


# -- save errors --------------------------------------------------------------------------------


def test_save_refuses_a_missing_file(tmp_path):
    folder = tmp_path / "case"
    case = _full_case(folder)
    (folder / "mri/t2_sag.nii.gz").unlink()
    with pytest.raises(CaseBundleError, match=r"mri.path 'mri/t2_sag.nii.gz' is not a file in the case folder"):
        save_case(case, folder)
    assert not (folder / "case.json").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c, "case_id", "Doe, John"), r"at case_id: 'Doe, John' does not match"),
        (lambda c: setattr(c, "landmarks", [Landmark("x", "Mri", ("a", 0, 0))]), r"landmarks\[0\].point_mm must be numbers"),
        (lambda c: setattr(c, "landmarks", [Landmark("x", "Tracker", (0, 0, 0))]), r"at landmarks\[0\].frame: 'Tracker' is not one of"),
        (
            lambda c: setattr(c, "transforms", {"ReferenceToMri": Transform(np.eye(4), "Mri", "Reference")}),
            "transforms.ReferenceToMri must be a Transform named ReferenceToMri",
        ),
        (
            lambda c: setattr(c, "sweeps", [SweepRef("s", "0" * 64, Transform(np.eye(4), "Probe", "Reference"))]),
            r"sweeps\[0\].image_to_probe must be a Transform named ImageToProbe",
        ),
    ],
)
def test_save_refuses_invalid_cases(tmp_path, change, message):
    folder = tmp_path / "case"
    case = _full_case(folder)
    change(case)
    with pytest.raises(CaseBundleError, match=message):
        save_case(case, folder)
    assert not (folder / "case.json").exists()


# -- load errors ---------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(CaseBundleError, match="case folder not found"):
        load_case(tmp_path / "nowhere")


def test_folder_without_case_json(tmp_path):
    with pytest.raises(CaseBundleError, match="no case.json in the case folder"):
        load_case(tmp_path)


def test_invalid_json_names_line_and_column(tmp_path):
    (tmp_path / "case.json").write_text('{\n  "schema_version": 1,\n  "case_id": "A",,\n}')
    with pytest.raises(CaseBundleError, match=r"case.json is not valid JSON at line 3, column 18: Expecting property name"):
        load_case(tmp_path)


def test_not_utf8(tmp_path):
    (tmp_path / "case.json").write_bytes(b'{"title": "\xff\xfe"}')
    with pytest.raises(CaseBundleError, match="case.json is not UTF-8 text"):
        load_case(tmp_path)


def test_not_an_object(tmp_path):
    (tmp_path / "case.json").write_text("[1, 2]")
    with pytest.raises(CaseBundleError, match="case.json must hold a JSON object"):
        load_case(tmp_path)


@pytest.mark.parametrize("version", [None, "1", 1.0, True])
def test_schema_version_must_be_an_integer(tmp_path, version):
    (tmp_path / "case.json").write_text(json.dumps({"schema_version": version}))
    with pytest.raises(CaseBundleError, match="case.json has no integer schema_version"):
        load_case(tmp_path)


def test_newer_schema_version_asks_for_an_upgrade(bundle):
    _rewrite(bundle, lambda d: d.update(schema_version=3, hologram={"new": "field"}))
    with pytest.raises(CaseBundleError) as info:
        load_case(bundle)
    assert info.value.problem == "case.json is schema version 3, this workbench reads up to 2; upgrade workbench"


def test_negative_schema_version(bundle):
    _rewrite(bundle, lambda d: d.update(schema_version=-1))
    with pytest.raises(CaseBundleError, match="case.json has unknown schema_version -1"):
        load_case(bundle)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["landmarks"][2].update(point_mm=[1.0, 2.0]), r"at landmarks\[2\].point_mm: \[1.0, 2.0\] is too short"),
        (lambda d: d["landmarks"][0].update(point_mm=[1.0, "2", 3.0]), r"at landmarks\[0\].point_mm\[1\]: '2' is not of type 'number'"),
        (lambda d: d["sweeps"][0].update(sha256="abc"), r"at sweeps\[0\].sha256: 'abc' does not match"),
        (lambda d: d["transforms"].update(ReferenceToMri=[1.0] * 15), r"at transforms.ReferenceToMri: .* is too short"),
        (lambda d: d["transforms"].update(registration=[1.0] * 16), r"at transforms: 'registration' does not match"),
        (lambda d: d.pop("landmarks"), r"at \(top level\): 'landmarks' is a required property"),
        (lambda d: d.update(created_utc="1 May 2024"), r"at created_utc: '1 May 2024' does not match"),
        (lambda d: d["mri"].update(spacing_mm=[0.6, 0.0, 4.0]), r"at mri.spacing_mm\[1\]: 0.0 is less than or equal to the minimum of 0"),
    ],
)
def test_schema_violation_names_the_json_path(bundle, mutate, message):
    _rewrite(bundle, mutate)
    with pytest.raises(CaseBundleError, match="case.json does not match schema version 2 " + message):
        load_case(bundle)


@pytest.mark.parametrize(
    "literal, shown",
    [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")],
)
def test_non_finite_numbers(bundle, literal, shown):
    text = (bundle / "case.json").read_text().replace('"point_mm": [1.5, -20.25, 33.0]', f'"point_mm": [1.5, {literal}, 33.0]')
    (bundle / "case.json").write_text(text)
    with pytest.raises(CaseBundleError, match=rf"landmarks\[0\].point_mm\[1\] is {shown}; numbers in case.json must be finite"):
        load_case(bundle)


def test_invalid_timestamp(bundle):
    _rewrite(bundle, lambda d: d.update(modified_utc="2024-13-01T00:00:00Z"))
    with pytest.raises(CaseBundleError, match="modified_utc '2024-13-01T00:00:00Z' is not a valid date and time"):
        load_case(bundle)


@pytest.mark.parametrize(
    "matrix, message",
    [
        ([0.0] * 15 + [1.0], "transforms.ReferenceToMri: ReferenceToMri: matrix is singular"),
        ([1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1], "transforms.ReferenceToMri: ReferenceToMri: last row must be 0 0 0 1"),
    ],
)
def test_invalid_transform_matrix(bundle, matrix, message):
    _rewrite(bundle, lambda d: d["transforms"].update(ReferenceToMri=matrix))
    with pytest.raises(CaseBundleError, match=message):
        load_case(bundle)


def test_invalid_transform_name(bundle):
    _rewrite(bundle, lambda d: d["transforms"].update(ReferenceToMriToAtlas=[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]))
    with pytest.raises(CaseBundleError, match="transforms.ReferenceToMriToAtlas: invalid transform name"):
        load_case(bundle)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda d: d["landmarks"][2].update(name="L4 spinous process"),
            r"landmarks\[2\]: another Mri landmark has name 'L4 spinous process'",
        ),
        (lambda d: d["landmarks"][2].update(pair="L4SP"), r"landmarks\[2\]: another Mri landmark has pair 'L4SP'"),
        (lambda d: d["targets"].append(dict(d["targets"][0])), r"targets\[1\]: another target is named 'left L3-L4'"),
    ],
)
def test_duplicate_names(bundle, mutate, message):
    _rewrite(bundle, mutate)
    with pytest.raises(CaseBundleError, match=message):
        load_case(bundle)


@pytest.mark.parametrize(
    "path, message",
    [
        ("/etc/passwd", "mri.path '/etc/passwd' is absolute; paths in case.json are relative to the case folder"),
        ("C:/scans/t2.nii.gz", "mri.path 'C:/scans/t2.nii.gz' is absolute"),
        ("mri\\t2_sag.nii.gz", r"mri.path 'mri\\\\t2_sag.nii.gz' contains '\\'; paths in case.json use '/'"),
        ("../other_case/mri/t2_sag.nii.gz", r"mri.path '../other_case/mri/t2_sag.nii.gz' contains '..'; files must stay inside"),
        ("mri/../mri/t2_sag.nii.gz", "contains '..'"),
    ],
)
def test_unsafe_paths(bundle, path, message):
    _rewrite(bundle, lambda d: d["mri"].update(path=path))
    with pytest.raises(CaseBundleError, match=message):
        load_case(bundle)


def test_symlink_leaving_the_folder(bundle, tmp_path):
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(MRI_BYTES)
    (bundle / "mri" / "link.nii.gz").symlink_to(outside)
    _rewrite(bundle, lambda d: d["mri"].update(path="mri/link.nii.gz"))
    with pytest.raises(CaseBundleError, match="mri.path 'mri/link.nii.gz' is a symbolic link; links are refused"):
        load_case(bundle)


def test_symlink_inside_the_folder_is_refused_too(bundle):
    # one rule (workbench.io.paths.contained): links are refused, not resolved, wherever they point
    (bundle / "mri" / "alias.nii.gz").symlink_to("t2_sag.nii.gz")
    _rewrite(bundle, lambda d: d["mri"].update(path="mri/alias.nii.gz"))
    with pytest.raises(CaseBundleError, match="mri.path 'mri/alias.nii.gz' is a symbolic link; links are refused"):
        load_case(bundle, verify_digests=False)


def test_referenced_file_missing(bundle):
    (bundle / "sweeps" / "sweep1.igs.mha").unlink()
    with pytest.raises(CaseBundleError, match=r"sweeps\[0\].path 'sweeps/sweep1.igs.mha' is not a file in the case folder"):
        load_case(bundle)


def test_referenced_device_set_missing(bundle):
    (bundle / "device_sets" / "probe.xml").unlink()
    with pytest.raises(CaseBundleError, match=r"sweeps\[0\].device_set.path 'device_sets/probe.xml' is not a file"):
        load_case(bundle)


def test_digest_mismatch_is_an_error_unless_verification_is_off(bundle):
    (bundle / "mri" / "t2_sag.nii.gz").write_bytes(MRI_BYTES + b"edited")
    with pytest.raises(CaseBundleError) as info:
        load_case(bundle)
    actual = _sha(MRI_BYTES + b"edited")
    assert info.value.problem == (
        f"mri.path 'mri/t2_sag.nii.gz' has SHA-256 {actual[:16]}..., case.json records "
        f"{_sha(MRI_BYTES)[:16]}...: the file changed after it was added"
    )
    assert info.value.path == str(bundle / "case.json")
    assert load_case(bundle, verify_digests=False).mri.sha256 == _sha(MRI_BYTES)


# -- migration ------------------------------------------------------------------------------------


def _version_0_document() -> dict:
    return {
        "schema_version": 0,
        "case_id": "PVB-003",
        "title": "from the pilot",
        "created_utc": "2023-02-01T08:00:00Z",
        "modified_utc": "2023-02-02T08:00:00Z",
        "software": "0.0.3",
        "mri": {"path": "mri/t2_sag.nii.gz", "sha256": _sha(MRI_BYTES), "description": "T2 sagittal"},
        "sweeps": [
            {
                "path": "sweeps/sweep1.igs.mha",
                "sha256": _sha(SWEEP_BYTES),
                "image_to_probe": IMAGE_TO_PROBE.ravel().tolist(),
                "calibration_error_mm": 0.58,
            }
        ],
        "landmarks": {"L5 spinous process": [2.0, -19.5, 0.0], "L4 spinous process": [1.5, -20.25, 33.0]},
        "reference_to_mri": REFERENCE_TO_MRI.ravel().tolist(),
        "notes": "pilot",
    }


@pytest.fixture
def v0_bundle(tmp_path) -> Path:
    folder = tmp_path / "old_case"
    _put(folder, "mri/t2_sag.nii.gz", MRI_BYTES)
    _put(folder, "sweeps/sweep1.igs.mha", SWEEP_BYTES)
    (folder / "case.json").write_text(json.dumps(_version_0_document()))
    return folder


def test_version_0_loads_as_the_current_version_with_the_same_data(v0_bundle):
    case = load_case(v0_bundle)
    assert case.schema_version == 2
    assert case.registrations == [] and case.current_registration is None
    assert (case.case_id, case.title, case.notes, case.software) == ("PVB-003", "from the pilot", "pilot", "0.0.3")
    assert (case.created_utc, case.modified_utc) == ("2023-02-01T08:00:00Z", "2023-02-02T08:00:00Z")
    assert case.landmarks == [
        Landmark("L5 spinous process", "Mri", (2.0, -19.5, 0.0)),
        Landmark("L4 spinous process", "Mri", (1.5, -20.25, 33.0)),
    ]
    assert list(case.transforms) == ["ReferenceToMri"]
    assert np.array_equal(case.transforms["ReferenceToMri"].matrix, REFERENCE_TO_MRI)
    assert np.array_equal(case.sweeps[0].image_to_probe.matrix, IMAGE_TO_PROBE)
    assert case.sweeps[0].calibration_error_mm == 0.58 and case.sweeps[0].device_set is None
    assert case.mri == MriRef("mri/t2_sag.nii.gz", _sha(MRI_BYTES), "MR", "T2 sagittal")
    assert case.targets == []


def test_version_0_is_saved_as_the_current_version(v0_bundle):
    save_case(load_case(v0_bundle), v0_bundle)
    document = json.loads((v0_bundle / "case.json").read_text())
    assert document["schema_version"] == 2 and "reference_to_mri" not in document
    assert document["landmarks"][0] == {"name": "L5 spinous process", "frame": "Mri", "point_mm": [2.0, -19.5, 0.0]}
    assert describe_case(v0_bundle)["schema_version"] == 2


def test_version_0_without_registration(v0_bundle):
    document = _version_0_document()
    del document["reference_to_mri"], document["mri"]
    (v0_bundle / "case.json").write_text(json.dumps(document))
    case = load_case(v0_bundle)
    assert case.transforms == {} and case.mri is None


def test_invalid_version_0_is_checked_against_its_own_schema(v0_bundle):
    document = _version_0_document()
    document["landmarks"] = [{"name": "L5", "frame": "Mri", "point_mm": [0, 0, 0]}]  # the version 1 layout
    (v0_bundle / "case.json").write_text(json.dumps(document))
    with pytest.raises(CaseBundleError, match=r"does not match schema version 0 at landmarks: .* is not of type 'object'"):
        load_case(v0_bundle)


def test_version_0_with_nan(v0_bundle):
    text = (v0_bundle / "case.json").read_text().replace("[2.0, -19.5, 0.0]", "[2.0, NaN, 0.0]")
    (v0_bundle / "case.json").write_text(text)
    with pytest.raises(CaseBundleError, match=r"landmarks.L5 spinous process\[1\] is nan"):
        load_case(v0_bundle)


# -- describe -------------------------------------------------------------------------------------


def test_describe_case(bundle):
    info = describe_case(bundle)
    modified = info.pop("modified_utc")
    assert modified.endswith("Z")
    assert info == {
        "kind": "case",
        "path": str(bundle),
        "case_id": "PVB-007",
        "title": "L3-L4 left paravertebral block",
        "schema_version": 2,
        "created_utc": "2024-05-01T09:30:00Z",
        "software": workbench.__version__,
        "mri": {
            "path": "mri/t2_sag.nii.gz",
            "modality": "MR",
            "description": "T2 sagittal",
            "size_px": [320, 320, 40],
            "spacing_mm": [0.6, 0.6, 4.0],
        },
        "sweeps": {"count": 1, "paths": ["sweeps/sweep1.igs.mha"]},
        "landmarks": 3,
        "targets": 1,
        "transforms": ["ReferenceToMri"],
        "attachments": {},
    }
    json.dumps(info, allow_nan=False)


def test_describe_version_0_reports_the_file_version(v0_bundle):
    info = describe_case(v0_bundle)
    assert (info["schema_version"], info["landmarks"], info["targets"]) == (0, 2, 0)
    assert info["mri"]["size_px"] is None


# -- add_file -----------------------------------------------------------------------------------------


def test_add_file_copies_with_digest(tmp_path):
    source = tmp_path / "t2.nii.gz"
    source.write_bytes(MRI_BYTES * 1000)
    folder = tmp_path / "case"
    relative, sha256 = add_file(folder, source, "mri")
    assert (relative, sha256) == ("mri/t2.nii.gz", _sha(MRI_BYTES * 1000))
    assert (folder / relative).read_bytes() == MRI_BYTES * 1000
    assert os.listdir(folder / "mri") == ["t2.nii.gz"]
    assert add_file(folder, source, "mri") == (relative, sha256)  # same content again: no-op


def test_add_file_refuses_to_overwrite_other_content(tmp_path):
    folder = tmp_path / "case"
    _put(folder, "sweeps/s.igs.mha", SWEEP_BYTES)
    source = tmp_path / "s.igs.mha"
    source.write_bytes(b"another sweep")
    with pytest.raises(CaseBundleError, match="sweeps/s.igs.mha already exists with other content"):
        add_file(folder, source, "sweep")
    assert (folder / "sweeps/s.igs.mha").read_bytes() == SWEEP_BYTES


def test_add_file_errors(tmp_path):
    header = tmp_path / "volume.mhd"
    header.write_text("ObjectType = Image\nElementDataFile = volume.raw\n")
    with pytest.raises(CaseBundleError, match="detached-header files keep their pixels in a second file"):
        add_file(tmp_path / "case", header, "mri")
    with pytest.raises(CaseBundleError, match="unknown file kind 'ct'; expected one of mri, sweep, device_set"):
        add_file(tmp_path / "case", header, "ct")
    with pytest.raises(CaseBundleError, match="no such file to add to the case"):
        add_file(tmp_path / "case", tmp_path / "missing.nii.gz", "mri")


def test_add_file_crash_leaves_no_partial_file(tmp_path, monkeypatch):
    source = tmp_path / "t2.nii.gz"
    source.write_bytes(MRI_BYTES)
    folder = tmp_path / "case"
    monkeypatch.setattr(os, "replace", _boom)
    with pytest.raises(CaseBundleError, match="cannot copy into the case folder"):
        add_file(folder, source, "mri")
    monkeypatch.undo()
    assert os.listdir(folder / "mri") == []


# -- attachments ----------------------------------------------------------------------------


def _with_attachments(folder: Path) -> Case:
    (folder / "mri" / "dicom").mkdir(parents=True)
    for i in range(3):
        (folder / "mri" / "dicom" / f"{i:04d}.dcm").write_bytes(bytes([i]) * 10)
    (folder / "labels.nrrd").write_bytes(b"label map bytes")
    case = _full_case(folder)
    case.attachments = [
        Attachment("mri_dicom", "mri/dicom", path_sha256(folder / "mri" / "dicom"), "synthetic DICOM series"),
        Attachment("label_map", "labels.nrrd", path_sha256(folder / "labels.nrrd")),
    ]
    return case


def test_attachments_round_trip_and_are_counted(tmp_path):
    folder = tmp_path / "case"
    saved = save_case(_with_attachments(folder), folder)
    loaded = load_case(folder)
    assert loaded.attachments == saved.attachments
    assert describe_case(folder)["attachments"] == {"label_map": 1, "mri_dicom": 1}


def test_folder_digest_is_a_manifest_of_names_and_contents(tmp_path):
    folder = tmp_path / "case"
    save_case(_with_attachments(folder), folder)
    before = path_sha256(folder / "mri" / "dicom")
    expected = hashlib.sha256(
        "".join(f"{i:04d}.dcm\t{hashlib.sha256(bytes([i]) * 10).hexdigest()}\n" for i in range(3)).encode()
    ).hexdigest()
    assert before == expected
    (folder / "mri" / "dicom" / "0002.dcm").rename(folder / "mri" / "dicom" / "0003.dcm")
    with pytest.raises(CaseBundleError, match=r"attachments\[0\]\.path 'mri/dicom' has SHA-256"):
        load_case(folder)


def test_attachment_role_must_be_known(tmp_path):
    folder = tmp_path / "case"
    case = _with_attachments(folder)
    case.attachments.append(Attachment("x-ray", "labels.nrrd", path_sha256(folder / "labels.nrrd")))
    with pytest.raises(CaseBundleError, match=r"attachments\[2\]\.role"):
        save_case(case, folder)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_add_file_refuses_a_volume_header_with_patient_text(tmp_path, suffix):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    if suffix == ".nii.gz":
        image.SetMetaData("ITK_FileNotes", "Time=113717.208 Doe^John")  # ITK writes it as descrip
    else:
        image.SetMetaData("PatientName", "Doe^John")
    source = tmp_path / f"mri{suffix}"
    sitk.WriteImage(image, str(source))
    with pytest.raises(CaseBundleError, match="header has a text field") as caught:
        add_file(tmp_path / "case", source, "mri")
    assert "Doe" not in str(caught.value) and str(source) in str(caught.value)
    assert not (tmp_path / "case" / "mri").exists() or not any((tmp_path / "case" / "mri").iterdir())
    clean = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))  # voxels and geometry only: accepted
    sitk.WriteImage(clean, str(tmp_path / f"clean{suffix}"))
    relative, _ = add_file(tmp_path / "case", tmp_path / f"clean{suffix}", "mri")
    assert relative == f"mri/clean{suffix}"
