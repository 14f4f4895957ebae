"""Label maps carry their names: label tables on disk, and importing segmentations into a case.

The real fixture is the TPTBox T2w crop of ``../shared/data/spine-crops-tptbox-mri-ct`` with its
vertebra (``seg-vert``) and sub-region (``seg-subreg``) masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import SHARED_DATA
from workbench.anatomy import WORKBENCH_TABLE, LabelMap, LabelMapError, LabelName, format_label_name, parse_label_name
from workbench.case import Attachment, load_case, path_sha256, save_case
from workbench.case.create import new_case
from workbench.case.labels import (
    TPTBOX_SUBREGIONS,
    TPTBOX_VERTEBRA_LEVELS,
    import_label_map,
    read_case_label_map,
    read_label_map_file,
)
from workbench.cli import main
from workbench.io.label_table import read_label_table, read_raw_label_table, sidecar_path, write_label_table

CROP = SHARED_DATA / "spine-crops-tptbox-mri-ct" / "sample_mri"
T2W = CROP / "sub-mri_label-6_T2w.nii.gz"
VERT = CROP / "sub-mri_seg-vert_label-6_msk.nii.gz"
SUBREG = CROP / "sub-mri_seg-subreg_label-6_msk.nii.gz"
TPTBOX_BONE = range(41, 51)  # TPTBox sub-regions that are vertebral bone (arch ... corpus)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _small_mri(path: Path, size=(20, 20, 20), spacing=1.0, origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(np.full(size[::-1], 100, np.int16))
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def _labels_like(path: Path, values_kji: np.ndarray, spacing=1.0, origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(values_kji)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture()
def small_case(tmp_path) -> Path:
    return new_case(tmp_path / "case", mri=_small_mri(tmp_path / "mri.nii.gz"))


def _snapshot(case_dir: Path) -> tuple[bytes, list[str]]:
    return (case_dir / "case.json").read_bytes(), sorted(str(p.relative_to(case_dir)) for p in case_dir.rglob("*"))


# -- names and tables ------------------------------------------------------------------------------


def test_label_names_carry_class_level_and_side():
    assert parse_label_name("vertebra_L4") == LabelName("VERTEBRA", "L4", None)
    assert parse_label_name("TRANSVERSE_PROCESS_L4_left") == ("TRANSVERSE_PROCESS", "L4", "left")
    assert parse_label_name("kidney_right") == ("KIDNEY", None, "right")
    assert format_label_name("ARTICULAR_PROCESS", "T13", "right") == "articular_process_T13_right"
    with pytest.raises(LabelMapError, match="not a name of the label vocabulary"):
        parse_label_name("vertebrae_L4")  # TotalSegmentator's name: only through its declared mapping
    values = np.array([[[0, 1, 2, 3]]], np.uint8)
    label_map = LabelMap(values, {0: "unlabelled", 1: "vertebra_L4", 2: "spinous_process_L5", 3: "KIDNEY_left"}, np.eye(4))
    assert dict(label_map.table) == {0: "UNLABELLED", 1: "VERTEBRA", 2: "SPINOUS_PROCESS", 3: "KIDNEY"}
    assert label_map.names[3] == "kidney_left" and label_map.level_of(1) == "L4" and label_map.level_of(3) is None
    assert label_map.values_at_level("L5") == (2,) and label_map.sides == {3: "left"}
    assert label_map.bone_mask().tolist() == [[[False, True, True, False]]]
    assert not label_map.mask(["AIR"]).any()  # unlabelled is not air


EXPECTED = {0: "unlabelled", 1: "vertebra_L4", 2: "transverse_process_L4_left", 7: "spinal_canal", 12: "vertebra_L5"}


def test_label_tables_round_trip_in_every_format(tmp_path):
    written = write_label_table(EXPECTED, tmp_path / "t.labels.json")
    assert json.loads(written.read_text())["labels"][1] == {"value": 1, "name": "vertebra_L4"}
    assert read_label_table(written) == EXPECTED
    csv_text = "value,name\n0,unlabelled\n1,vertebra_L4\n2,transverse_process_L4_left\n7,SPINAL_CANAL\n12,vertebrae_L5\n"
    (tmp_path / "t.csv").write_text(csv_text)
    assert read_label_table(tmp_path / "t.csv") == EXPECTED
    (tmp_path / "snap.txt").write_text(
        "# ITK-SnAP Label Description File\n"
        '    0     0    0    0        0  0  0    "Clear Label"\n'
        '    1   255    0    0        1  1  1    "vertebrae_L4"\n'
        '    2     0  255    0        1  1  1    "transverse_process_L4_left"\n'
        '    7     0    0  255        1  1  1    "spinal_canal"\n'
        '   12   255  255    0        1  1  1    "vertebra_L5"\n'
    )
    assert read_raw_label_table(tmp_path / "snap.txt")[0] == "Clear Label"
    assert read_label_table(tmp_path / "snap.txt") == EXPECTED
    (tmp_path / "colors.ctbl").write_text(
        "# Color table file\n# 5 values\n0 background 0 0 0 0\n1 vertebrae_L4 255 0 0 255\n"
        "2 transverse_process_L4_left 0 255 0 255\n7 spinal_canal 0 0 255 255\n12 vertebra_L5 9 9 9 255\n"
    )
    assert read_label_table(tmp_path / "colors.ctbl") == EXPECTED


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("bad.csv", "1,vertebra_L4\n2,liver_segment_9\n", "label value 2: 'liver_segment_9' is not a name of the label vocabulary"),
        ("bad.csv", "1,vertebra_L4\n1,vertebra_L5\n", "line 2: label value 1 is named twice"),
        ("bad.json", '{"labels": [{"value": "1", "name": "vertebra_L4"}]}', r"labels\[0\] needs an integer value"),
        ("bad.txt", "1 vertebra_L4 255 0\n", "line 1: neither an ITK-SNAP label line"),
        ("bad.csv", "# nothing\n", "the label table names no label"),
    ],
)
def test_malformed_tables_are_refused_naming_file_and_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(LabelMapError, match=match):
        read_label_table(tmp_path / name)


# -- TPTBox: the real MRI crop ---------------------------------------------------------------------


def _expected_tptbox_names(vert: np.ndarray, subreg: np.ndarray) -> dict[tuple[int, int], str]:
    """(vert value, subreg value) -> expected name, from the TPTBox conventions written out here."""
    classes = {41: "vertebral_arch", 42: "spinous_process", 43: "transverse_process", 44: "transverse_process",
               45: "articular_process", 46: "articular_process", 47: "articular_process", 48: "articular_process",
               49: "vertebral_body", 50: "vertebral_body", 60: "spinal_cord", 61: "spinal_canal", 62: "endplate", 100: "disc"}
    sides = {43: "_left", 44: "_right", 45: "_left", 46: "_right", 47: "_left", 48: "_right"}
    levels = {5: "C5", 6: "C6", 7: "C7"}  # TPTBox numbering (the provenance doubts it; the file says so)
    expected = {}
    for v, s in {(int(a), int(b)) for a, b in zip(vert.ravel(), subreg.ravel())}:
        if v == 0 and s == 0:
            expected[v, s] = "unlabelled"
        else:
            level = f"_{levels[v % 100]}" if v else ""
            expected[v, s] = f"{classes[s]}{level}{sides.get(s, '')}"
    return expected


def test_tptbox_mri_crop_imports_with_exact_bone_and_names(tmp_path, capsys):
    case_dir = new_case(tmp_path / "case", mri=T2W)
    assert main(["labels", "import", str(case_dir), "--from", str(CROP)]) == 0
    summary = json.loads(capsys.readouterr().out)
    vert, subreg = _array(VERT), _array(SUBREG)
    source_bone = int(np.isin(subreg, TPTBOX_BONE).sum())
    assert source_bone == 32646 and summary["bone_voxels"] == source_bone

    case = load_case(case_dir)  # digests of the label map and its table verified
    roles = {a.role: a.path for a in case.attachments}
    assert roles["label_map"] == "labels/label_map.nrrd" and sidecar_path(case_dir / roles["label_map"]).is_file()
    label_map = read_case_label_map(case, case_dir)
    assert label_map.array.shape == vert.shape and int(label_map.bone_mask().sum()) == source_bone  # same grid: exact
    source_geometry = LabelMap(sitk.ReadImage(str(VERT)), {0: "AIR"}).mri_voxel_to_mri.matrix
    np.testing.assert_allclose(label_map.mri_voxel_to_mri.matrix, source_geometry, atol=1e-4)
    # every voxel is named as the TPTBox conventions say
    expected = _expected_tptbox_names(vert, subreg)
    for (v, s), name in expected.items():
        values = np.unique(label_map.array[(vert == v) & (subreg == s)])
        assert [label_map.names[int(x)] for x in values] == [name], (v, s)
    assert len(label_map.names) == len(set(expected.values())) == 29
    assert label_map.level_of(label_map.values_of(["SPINOUS_PROCESS"])[1]) == "C6"
    assert {summary_entry["name"]: summary_entry["voxels"] for summary_entry in summary["labels"]}["spinal_cord"] == 345
    # the patient's left is +x in LPS: the left transverse process of C6 lies left of the right one
    left, right = (label_map.values_of(["TRANSVERSE_PROCESS"])[i] for i in (2, 3))
    assert (label_map.names[left], label_map.names[right]) == ("transverse_process_C6_left", "transverse_process_C6_right")
    left_lps, right_lps = (_centroids_lps(label_map, label_map.array == v) for v in (left, right))
    assert left_lps[0] - right_lps[0] > 40.0  # mm apart, left at +x


def test_tptbox_ct_crop_reads_lumbar_levels(tmp_path):
    ct = SHARED_DATA / "spine-crops-tptbox-mri-ct" / "sample_ct"
    case_dir = new_case(tmp_path / "case", mri=ct / "sub-ct_label-22_ct.nii.gz")
    label_map = read_label_map_file(import_label_map(case_dir, ct / "sub-ct_seg-vert_label-22_msk.nii.gz"))
    subreg = _array(ct / "sub-ct_seg-subreg_label-22_msk.nii.gz")
    assert int(label_map.bone_mask().sum()) == int(np.isin(subreg, TPTBOX_BONE).sum()) == 36348
    assert sorted(set(label_map.levels.values())) == ["L2", "L3", "L4"]  # vert IDs 21-23, as the provenance says
    spinous_l3 = label_map.values_of(["SPINOUS_PROCESS"])[1]
    assert label_map.names[spinous_l3] == "spinous_process_L3" and int((label_map.array == spinous_l3).sum()) == 737


def test_tptbox_tables_cover_the_documented_labels():
    assert TPTBOX_VERTEBRA_LEVELS[20] == "L1" and TPTBOX_VERTEBRA_LEVELS[23] == "L4" and TPTBOX_VERTEBRA_LEVELS[28] == "T13"
    assert TPTBOX_VERTEBRA_LEVELS[26] == "S1" and 27 not in TPTBOX_VERTEBRA_LEVELS  # the coccyx has no level here
    assert sorted(TPTBOX_SUBREGIONS) == [*range(41, 51), 60, 61, 62, 100]


def _centroids_lps(label_map: LabelMap, mask_kji: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask_kji)
    return label_map.mri_voxel_to_mri.apply_to_points(np.c_[i, j, k].astype(float)).mean(axis=0)


@pytest.mark.parametrize("spacing_mm, shift_mm", [(1.0, (0.37, -0.61, 0.23)), (2.0, (-1.1, 0.4, 0.9))])
def test_resampling_onto_another_mri_grid_keeps_each_vertebra_within_half_a_voxel(tmp_path, spacing_mm, shift_mm):
    """Half a voxel of the coarser grid: nearest neighbour from the 1.5 mm crop quantises at 0.75 mm."""
    source_mri = sitk.ReadImage(str(T2W))
    extent = np.array(source_mri.GetSize()) * 1.5
    size = [int(n) + 4 for n in np.ceil(extent / spacing_mm)]  # a 2-voxel margin: the whole crop is inside
    reference = sitk.Image(size, source_mri.GetPixelID())
    reference.SetSpacing((spacing_mm,) * 3)
    reference.SetDirection(source_mri.GetDirection())
    margin_lps = np.reshape(source_mri.GetDirection(), (3, 3)) @ np.full(3, -2.0 * spacing_mm)
    reference.SetOrigin(tuple(np.array(source_mri.GetOrigin()) + margin_lps + shift_mm))
    mri = sitk.Resample(source_mri, reference, sitk.Transform(), sitk.sitkLinear, 0)
    sitk.WriteImage(mri, str(tmp_path / "mri.nii.gz"))
    case_dir = new_case(tmp_path / "case", mri=tmp_path / "mri.nii.gz")
    import_label_map(case_dir, VERT, fmt="tptbox")
    label_map = read_case_label_map(load_case(case_dir), case_dir)
    assert np.allclose(label_map.spacing_mm, spacing_mm) and label_map.array.shape == tuple(size[::-1])
    source = LabelMap(sitk.ReadImage(str(VERT)), {0: "AIR"})
    errors_mm = []
    for vert_id, level in ((5, "C5"), (6, "C6"), (7, "C7")):
        expected = _centroids_lps(source, source.array == vert_id)
        bone_at_level = label_map.bone_mask() & np.isin(label_map.array, label_map.values_at_level(level))
        error_mm = np.abs(_centroids_lps(label_map, bone_at_level) - expected)
        # nearest neighbour quantises at the coarser of the two grids (the crop's is 1.5 mm)
        assert np.all(error_mm <= max(spacing_mm, 1.5) / 2), (level, error_mm)
        errors_mm.append(error_mm.max())
    print(f"largest centroid error {max(errors_mm):.3f} mm on a {spacing_mm} mm grid")


# -- TotalSegmentator folder -----------------------------------------------------------------------


def _totalseg_folder(folder: Path, overlap: bool = False) -> Path:
    folder.mkdir()
    for name, box in (("vertebrae_L4", (2, 8)), ("vertebrae_L5", (8, 14)), ("spinal_cord", (14, 16))):
        mask = np.zeros((20, 20, 20), np.uint8)
        mask[box[0] : box[1] + (1 if overlap and name == "vertebrae_L4" else 0), 5:10, 5:10] = 1
        _labels_like(folder / f"{name}.nii.gz", mask)
    _labels_like(folder / "liver.nii.gz", np.zeros((20, 20, 20), np.uint8))  # empty: skipped
    return folder


def test_totalsegmentator_folder_combines_masks_with_their_names(small_case, tmp_path):
    path = import_label_map(small_case, _totalseg_folder(tmp_path / "ts"))
    label_map = read_label_map_file(path)
    assert dict(label_map.names) == {0: "unlabelled", 1: "vertebra_L4", 2: "vertebra_L5", 3: "spinal_cord"}
    assert [int((label_map.array == v).sum()) for v in (1, 2, 3)] == [150, 150, 50]
    assert int(label_map.bone_mask().sum()) == 300 and label_map.values_at_level("L5") == (2,)
    assert read_raw_label_table(sidecar_path(path)) == dict(label_map.names)


def test_a_label_image_with_a_table_keeps_its_values(small_case, tmp_path):
    values = np.zeros((20, 20, 20), np.uint8)
    values[2:6] = 41
    values[6:9] = 7
    source = _labels_like(tmp_path / "seg.nrrd", values)
    (tmp_path / "seg.txt").write_text('0 0 0 0 0 0 0 "Clear Label"\n41 1 1 1 1 1 1 "vertebrae_L3"\n7 1 1 1 1 1 1 "aorta"\n')
    label_map = read_label_map_file(import_label_map(small_case, source, table=tmp_path / "seg.txt"))
    assert dict(label_map.names) == {0: "unlabelled", 7: "aorta", 41: "vertebra_L3"}
    assert int(label_map.bone_mask().sum()) == 4 * 400 and int(label_map.mask(["AORTA"]).sum()) == 3 * 400


def test_a_failed_second_import_puts_the_first_label_map_back(small_case, tmp_path, monkeypatch):
    """Import and segmentation share one attach (workbench.case.labels.attach_label_map): files are
    staged and the previous label map restored if saving case.json fails, never left half-replaced."""
    import workbench.case.storage as storage

    path = import_label_map(small_case, _totalseg_folder(tmp_path / "ts"))
    before, before_table = _snapshot(small_case), read_raw_label_table(sidecar_path(path))
    image_before = path.read_bytes()

    def failing_save(case, case_dir):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save_case", failing_save)
    values = np.zeros((20, 20, 20), np.uint8)
    values[2:6] = 41
    (tmp_path / "seg.txt").write_text('41 1 1 1 1 1 1 "vertebrae_L3"\n')
    with pytest.raises(OSError, match="disk full"):
        import_label_map(small_case, _labels_like(tmp_path / "seg.nrrd", values), table=tmp_path / "seg.txt")
    assert _snapshot(small_case) == before
    assert path.read_bytes() == image_before and read_raw_label_table(sidecar_path(path)) == before_table


# -- bad input: exit 2, one line, nothing attached ---------------------------------------------------


def _bad_sources(tmp_path: Path) -> list[tuple[list[str], str]]:
    values = np.zeros((20, 20, 20), np.uint8)
    values[5:10, 5:10, 5:10] = 3
    values[10:12, 5:10, 5:10] = 4
    seg = _labels_like(tmp_path / "seg.nii.gz", values)
    (tmp_path / "only3.csv").write_text("3,vertebra_L4\n")
    (tmp_path / "unknown.csv").write_text("3,vertebra_L4\n4,pancreatic_duct\n")
    far = _labels_like(tmp_path / "far.nii.gz", values, origin=(1000.0, 0.0, 0.0))
    (tmp_path / "both.csv").write_text("3,vertebra_L4\n4,vertebra_L5\n")
    empty = _labels_like(tmp_path / "empty.nii.gz", np.zeros((20, 20, 20), np.uint8))
    (tmp_path / "empty_ts").mkdir()
    _labels_like(tmp_path / "empty_ts" / "vertebrae_L4.nii.gz", np.zeros((20, 20, 20), np.uint8))
    return [
        (["--from", str(seg), "--table", str(tmp_path / "only3.csv")], "label values missing from the table only3.csv: 4"),
        (["--from", str(seg), "--table", str(tmp_path / "unknown.csv")],
         "label value 4: 'pancreatic_duct' is not a name of the label vocabulary"),
        (["--from", str(far), "--table", str(tmp_path / "both.csv")], "does not overlap the case MRI"),
        (["--from", str(empty), "--table", str(tmp_path / "both.csv")], "empty mask"),
        (["--from", str(tmp_path / "empty_ts")], "every mask is empty"),
        (["--from", str(_totalseg_folder(tmp_path / "overlap", overlap=True))],
         "vertebrae_L5.nii.gz: overlaps vertebrae_L4.nii.gz in 25 voxels"),
        (["--from", str(seg)], "a label map without a table"),
        (["--from", str(seg), "--table", str(tmp_path / "both.csv"), "--format", "tptbox"], "--table goes with a label image"),
    ]


def test_bad_input_exits_2_with_one_line_and_attaches_nothing(small_case, tmp_path, capsys):
    before = _snapshot(small_case)
    for args, match in _bad_sources(tmp_path):
        assert main(["labels", "import", str(small_case), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and match in err and err.startswith("workbench labels: error: "), err
        assert _snapshot(small_case) == before, args


def test_a_label_map_without_a_table_is_refused_except_in_a_synthetic_case(tmp_path):
    folder = new_case(tmp_path / "case", mri=_small_mri(tmp_path / "mri.nii.gz"))
    values = np.zeros((20, 20, 20), np.uint8)
    values[5:10] = 8  # VERTEBRAL_BODY in the workbench encoding
    _labels_like(folder / "labels.nrrd", values)
    case = load_case(folder)
    case.attachments = [*case.attachments, Attachment("label_map", "labels.nrrd", path_sha256(folder / "labels.nrrd"))]
    save_case(case, folder)
    with pytest.raises(LabelMapError, match=r"labels.nrrd: a label map without a table \(no labels.nrrd.labels.json\)"):
        read_case_label_map(load_case(folder), folder)
    (folder / "truth.json").write_text("{}")
    case = load_case(folder)
    case.attachments = [*case.attachments, Attachment("ground_truth", "truth.json", path_sha256(folder / "truth.json"))]
    label_map = read_case_label_map(save_case(case, folder), folder)
    assert dict(label_map.table) == dict(WORKBENCH_TABLE) and int(label_map.bone_mask().sum()) == 5 * 400
    # a sidecar whose table misses a value present in the image is refused on reading, too
    write_label_table({0: "unlabelled"}, sidecar_path(folder / "labels.nrrd"))
    with pytest.raises(LabelMapError, match="values that are not in its table: 8"):
        read_case_label_map(load_case(folder), folder)
