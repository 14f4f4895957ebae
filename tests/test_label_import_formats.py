"""Importing segmentations in every format the issue names: label tables, Slicer .seg.nrrd, DICOM SEG, TotalSegmentator.

Each import is checked by numbers: voxel counts per name, and positions in mm (LPS) after the
segmentation is put on the case MRI's grid. The DICOM SEG is built here with highdicom from the
real MRI series of ``../shared/data/mri-dicom-dcm_qa_decubitus`` (a brain T1, used for its
geometry only: a box named like a vertebra). Bad input exits 2 with one line and attaches nothing.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import SHARED_DATA
from workbench.anatomy import LabelMap, LabelMapError
from workbench.case import load_case
from workbench.case.create import new_case
from workbench.case.labels import (
    IMPORT_FORMATS,
    TOTALSEGMENTATOR_TASKS,
    _guess_format,
    import_label_map,
    read_case_label_map,
    read_label_map_file,
)
from workbench.cli import main
from workbench.io.dicom_seg import read_dicom_seg
from workbench.io.label_table import read_label_table
from workbench.io.seg_nrrd import read_seg_nrrd

DICOM_SERIES = SHARED_DATA / "mri-dicom-dcm_qa_decubitus" / "HFS" / "3_t1_fl2d_sag"
SIZE = (20, 20, 20)  # (i, j, k) voxels of the small test MRI, 1 mm, origin 0


def _small_mri(path: Path, size=SIZE, spacing=1.0, origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(np.full(size[::-1], 100, np.int16))
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def _image(values_kji: np.ndarray, spacing=1.0, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(values_kji)
    image.SetSpacing((spacing,) * 3 if np.isscalar(spacing) else spacing)
    image.SetOrigin(origin)
    return image


@pytest.fixture()
def small_case(tmp_path) -> Path:
    return new_case(tmp_path / "case", mri=_small_mri(tmp_path / "mri.nii.gz"))


def _snapshot(case_dir: Path) -> tuple[bytes, list[str]]:
    return (case_dir / "case.json").read_bytes(), sorted(str(p.relative_to(case_dir)) for p in case_dir.rglob("*"))


def _centroid_lps(label_map: LabelMap, mask_kji: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask_kji)
    return label_map.mri_voxel_to_mri.apply_to_points(np.c_[i, j, k].astype(float)).mean(axis=0)


def _counts_by_name(label_map: LabelMap) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value, name in label_map.names.items():
        counts[name] = counts.get(name, 0) + int((label_map.array == value).sum())
    return counts


def _expect_refused(case_dir: Path, args: list[str], match: str, capsys) -> None:
    before = _snapshot(case_dir)
    assert main(["labels", "import", str(case_dir), *args]) == 2, args
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("workbench labels: error: ") and match in err, err
    assert _snapshot(case_dir) == before, args


# -- label tables: one test per format -----------------------------------------------------------------

TABLES = {
    "json": ("seg.labels.json", '{"labels": [{"value": 0, "name": "background"}, {"value": 3, "name": "vertebra_L4"},\n'
                                ' {"value": 9, "name": "transverse_process_L4_left"}, {"value": 12, "name": "spinal_canal"}]}'),
    "csv": ("seg.csv", "value,name\n0,background\n3,vertebrae_L4\n9,transverse_process_L4_left\n12,SPINAL_CANAL\n"),
    "slicer-csv": ("seg.csv", "LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n0,Background,0,0,0,0\n"
                              "3,vertebrae_L4,255,0,0,255\n9,transverse_process_L4_left,0,255,0,255\n12,spinal_canal,0,0,255,255\n"),
    "itk-snap": ("seg.label", "################################################\n# ITK-SnAP Label Description File\n"
                              '    0     0    0    0        0  0  0    "Clear Label"\n'
                              '    3   255    0    0        1  1  1    "vertebrae_L4"\n'
                              '    9     0  255    0      0.5  1  0    "transverse_process_L4_left"\n'
                              '   12     0    0  255        1  1  1    "spinal_canal"\n'),
    "slicer-ctbl": ("seg.ctbl", "# Color table file /tmp/seg.ctbl\n# 4 values\n0 Background 0 0 0 0\n"
                                "3 vertebrae_L4 255 0 0 255\n9 transverse_process_L4_left 0 255 0 255\n12 spinal_canal 0 0 255 255\n"),
}


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_a_label_image_imports_with_a_table_in_each_format(small_case, tmp_path, kind):
    values = np.zeros(SIZE[::-1], np.uint8)
    values[2:6, 4:9, 4:9] = 3  # 4 x 5 x 5 = 100 voxels
    values[2:6, 4:9, 9:12] = 9  # 4 x 5 x 3 = 60
    values[8:10, 2:4, 2:5] = 12  # 2 x 2 x 3 = 12
    source = tmp_path / "seg.nrrd"
    sitk.WriteImage(_image(values), str(source))
    name, text = TABLES[kind]
    (tmp_path / name).write_text(text)
    assert read_label_table(tmp_path / name) == {0: "unlabelled", 3: "vertebra_L4", 9: "transverse_process_L4_left",
                                                 12: "spinal_canal"}
    label_map = read_label_map_file(import_label_map(small_case, source, table=tmp_path / name))
    assert _counts_by_name(label_map) == {"unlabelled": 8000 - 172, "vertebra_L4": 100,
                                          "transverse_process_L4_left": 60, "spinal_canal": 12}
    assert int(label_map.bone_mask().sum()) == 160  # vertebra + transverse process


def test_a_csv_header_without_a_value_column_is_refused(tmp_path):
    (tmp_path / "t.csv").write_text("id,structure\n3,vertebra_L4\n")
    with pytest.raises(LabelMapError, match=r"t.csv: line 1: a CSV label table header needs a value column"):
        read_label_table(tmp_path / "t.csv")


# -- 3D Slicer .seg.nrrd -----------------------------------------------------------------------------


def _write_seg_nrrd(path: Path, layers_kjil: np.ndarray, segments: list[dict], spacing=(1.0, 1.0, 1.0),
                    origin=(0.0, 0.0, 0.0), space="left-posterior-superior") -> Path:
    """A .seg.nrrd as Slicer writes it: 4D (layer axis first, kind list) when there are several layers."""
    k, j, i, n_layers = layers_kjil.shape
    directions = " ".join(f"({','.join(str(s if a == b else 0.0) for b in range(3))})" for a, s in enumerate(spacing))
    if n_layers > 1:
        header = ["dimension: 4", f"sizes: {n_layers} {i} {j} {k}", f"space directions: none {directions}",
                  "kinds: list domain domain domain"]
        data = layers_kjil.astype(np.uint8)
    else:
        header = ["dimension: 3", f"sizes: {i} {j} {k}", f"space directions: {directions}", "kinds: domain domain domain"]
        data = layers_kjil[..., 0].astype(np.uint8)
    lines = ["NRRD0004", "type: unsigned char", f"space: {space}", *header, "encoding: raw",
             f"space origin: ({','.join(map(str, origin))})", "Segmentation_MasterRepresentation:=Binary labelmap"]
    for n, segment in enumerate(segments):
        lines += [f"Segment{n}_ID:=Segment_{n + 1}", f"Segment{n}_Name:={segment['name']}",
                  f"Segment{n}_LabelValue:={segment.get('value', 1)}", f"Segment{n}_Layer:={segment.get('layer', 0)}",
                  f"Segment{n}_Extent:=0 {i - 1} 0 {j - 1} 0 {k - 1}"]
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + np.ascontiguousarray(data).tobytes())
    return path


def test_a_single_layer_seg_nrrd_written_by_simpleitk_imports_with_segment_names(small_case, tmp_path):
    """A finer (0.5 mm), shifted grid: nearest neighbour onto the 1 mm MRI keeps each box's centre within 0.5 mm."""
    values = np.zeros((40, 40, 40), np.uint8)
    values[4:16, 8:20, 10:30] = 1  # vertebra box, 0.5 mm voxels: 6 x 6 x 10 mm
    values[20:28, 8:20, 10:30] = 2  # spinal canal box: 4 x 6 x 10 mm
    image = _image(values, spacing=0.5, origin=(0.25, 0.25, 0.25))
    for key, text in {"Segment0_ID": "Segment_1", "Segment0_Name": "vertebra_L4", "Segment0_LabelValue": "1",
                      "Segment0_Layer": "0", "Segment0_Extent": "10 29 8 19 4 15", "Segment1_ID": "Segment_2",
                      "Segment1_Name": "spinal_canal", "Segment1_LabelValue": "2", "Segment1_Layer": "0"}.items():
        image.SetMetaData(key, text)
    source = tmp_path / "seg.seg.nrrd"
    sitk.WriteImage(image, str(source))
    seg = read_seg_nrrd(source)
    assert [(s.name, s.label_value, s.layer, s.extent_ijk) for s in seg.segments] == [
        ("vertebra_L4", 1, 0, (10, 29, 8, 19, 4, 15)), ("spinal_canal", 2, 0, None)]
    assert seg.voxel_counts == (12 * 12 * 20, 8 * 12 * 20) and int(seg.mask(1)[20:28, 8:20, 10:30].sum()) == 8 * 12 * 20

    assert _guess_format(source, None) == "slicer-seg"
    label_map = read_label_map_file(import_label_map(small_case, source))
    assert _counts_by_name(label_map) == {"unlabelled": 8000 - 360 - 240, "vertebra_L4": 6 * 6 * 10, "spinal_canal": 4 * 6 * 10}
    # box centres in mm: the source voxel (i, j, k) centre is 0.25 + 0.5 * index
    vertebra = label_map.array == label_map.values_at_level("L4")[0]
    np.testing.assert_allclose(_centroid_lps(label_map, vertebra), [0.25 + 0.5 * 19.5, 0.25 + 0.5 * 13.5, 0.25 + 0.5 * 9.5],
                               atol=0.5)
    canal = label_map.mask(["SPINAL_CANAL"])
    np.testing.assert_allclose(_centroid_lps(label_map, canal)[2], 0.25 + 0.5 * 23.5, atol=0.5)


def test_a_multi_layer_seg_nrrd_in_ras_lands_at_its_lps_position(tmp_path):
    """Two layers (a vertebra and the canal inside its box, as Slicer stores overlapping-capable segments) in RAS."""
    mri = _image(np.zeros((20, 20, 20), np.int16), origin=(-19.0, -19.0, 0.0))  # LPS x, y in -19..0 mm
    sitk.WriteImage(mri, str(tmp_path / "mri.nii.gz"))
    case_dir = new_case(tmp_path / "case", mri=tmp_path / "mri.nii.gz")
    layers = np.zeros((20, 20, 20, 2), np.uint8)
    layers[5:10, 2:6, 3:8, 0] = 1  # vertebra: RAS x 3..7, y 2..5, z 5..9 (origin RAS 0,0,0, 1 mm)
    layers[12:14, 2:6, 3:8, 1] = 1  # canal in layer 1, not overlapping
    layers[15:17, 2:6, 3:8, 0] = 4  # a second segment of layer 0, value 4
    source = _write_seg_nrrd(tmp_path / "two.seg.nrrd", layers,
                             [{"name": "vertebrae_L3"}, {"name": "spinal_canal", "layer": 1},
                              {"name": "kidney_left", "value": 4}], space="right-anterior-superior")
    label_map = read_label_map_file(import_label_map(case_dir, source))
    assert _counts_by_name(label_map) == {"unlabelled": 8000 - 100 - 40 - 40, "vertebra_L3": 100, "spinal_canal": 40,
                                          "kidney_left": 40}
    # RAS (x, y, z) -> LPS (-x, -y, z): the vertebra's centre RAS (5, 3.5, 7) is LPS (-5, -3.5, 7)
    vertebra = label_map.array == label_map.values_at_level("L3")[0]
    np.testing.assert_allclose(_centroid_lps(label_map, vertebra), [-5.0, -3.5, 7.0], atol=1e-6)
    np.testing.assert_allclose(_centroid_lps(label_map, label_map.mask(["KIDNEY"])), [-5.0, -3.5, 15.5], atol=1e-6)


def test_seg_nrrd_bad_input_exits_2_and_attaches_nothing(small_case, tmp_path, capsys):
    layers = np.zeros((20, 20, 20, 2), np.uint8)
    layers[5:10, 5:10, 5:10, 0] = 1
    layers[8:12, 5:10, 5:10, 1] = 1  # overlaps the first segment in 2 slices: 2 x 5 x 5 = 50 voxels
    overlap = _write_seg_nrrd(tmp_path / "overlap.seg.nrrd", layers, [{"name": "vertebra_L4"}, {"name": "spinal_canal", "layer": 1}])
    _expect_refused(small_case, ["--from", str(overlap)],
                    "overlapping layers: segment 'spinal_canal' (Segment1, layer 1, value 1) and segment 'vertebra_L4' "
                    "(Segment0, layer 0, value 1) share 50 voxels", capsys)
    one = np.zeros((20, 20, 20, 1), np.uint8)
    one[5:10, 5:10, 5:10, 0] = 1
    unknown = _write_seg_nrrd(tmp_path / "unknown.seg.nrrd", one, [{"name": "Segment_1"}])
    _expect_refused(small_case, ["--from", str(unknown)], "segment 'Segment_1' (Segment0, layer 0, value 1): 'Segment_1' is not a "
                    "name of the label vocabulary", capsys)
    empty = _write_seg_nrrd(tmp_path / "empty.seg.nrrd", one, [{"name": "vertebra_L4"}, {"name": "spinal_canal", "value": 2}])
    _expect_refused(small_case, ["--from", str(empty)], "segment 'spinal_canal' (Segment1, layer 0, value 2) is empty", capsys)
    one[1, 1, 1, 0] = 7
    unnamed = _write_seg_nrrd(tmp_path / "unnamed.seg.nrrd", one, [{"name": "vertebra_L4"}])
    _expect_refused(small_case, ["--from", str(unnamed)], "layer 0 holds label values no segment names: 7", capsys)
    far = _write_seg_nrrd(tmp_path / "far.seg.nrrd", one[..., :1] * (one[..., :1] == 1), [{"name": "vertebra_L4"}],
                          origin=(500.0, 0.0, 0.0))
    _expect_refused(small_case, ["--from", str(far)], "does not overlap the case MRI", capsys)
    plain = tmp_path / "plain.seg.nrrd"
    sitk.WriteImage(_image(one[..., 0]), str(plain))
    _expect_refused(small_case, ["--from", str(plain)], "not a 3D Slicer segmentation (no Segment<N>_Name in its header)", capsys)


CROP = SHARED_DATA / "spine-crops-tptbox-mri-ct" / "sample_mri"


def _crop_seg_nrrd(path: Path, layers_kji: list[np.ndarray], segments: list[tuple[str, int, int]]) -> Path:
    """A multi-layer .seg.nrrd on the real T2w crop's grid, written by SimpleITK (layers as components)."""
    t2w = sitk.ReadImage(str(CROP / "sub-mri_label-6_T2w.nii.gz"))
    image = sitk.Compose([sitk.GetImageFromArray(layer.astype(np.uint8)) for layer in layers_kji])
    image.CopyInformation(t2w)
    for n, (name, value, layer) in enumerate(segments):
        image.SetMetaData(f"Segment{n}_Name", name)
        image.SetMetaData(f"Segment{n}_LabelValue", str(value))
        image.SetMetaData(f"Segment{n}_Layer", str(layer))
    sitk.WriteImage(image, str(path))
    return path


def test_the_real_tptbox_crop_as_a_layered_seg_nrrd_imports_voxel_for_voxel(tmp_path, capsys):
    """Vertebrae, discs and the canal/cord of the real MRI crop in three layers: every voxel keeps its structure."""
    vert = sitk.GetArrayFromImage(sitk.ReadImage(str(CROP / "sub-mri_seg-vert_label-6_msk.nii.gz")))
    subreg = sitk.GetArrayFromImage(sitk.ReadImage(str(CROP / "sub-mri_seg-subreg_label-6_msk.nii.gz")))
    vertebrae = np.where(np.isin(vert, [5, 6, 7]), vert, 0)
    discs = np.where(np.isin(vert, [105, 106]), vert - 100, 0)
    canal = np.select([subreg == 60, subreg == 61], [1, 2], 0)
    segments = [("vertebrae_C5", 5, 0), ("vertebra_C6", 6, 0), ("vertebra_C7", 7, 0), ("disc_C5", 5, 1), ("disc_C6", 6, 1),
                ("spinal_cord", 1, 2), ("spinal_canal", 2, 2)]
    source = _crop_seg_nrrd(tmp_path / "crop.seg.nrrd", [vertebrae, discs, canal], segments)
    case_dir = new_case(tmp_path / "case", mri=CROP / "sub-mri_label-6_T2w.nii.gz")
    label_map = read_label_map_file(import_label_map(case_dir, source))
    assert _counts_by_name(label_map) == {
        "unlabelled": vert.size - 4449 - 15754 - 12443 - 3829 - 4768 - 345 - 4137, "vertebra_C5": 4449, "vertebra_C6": 15754,
        "vertebra_C7": 12443, "disc_C5": 3829, "disc_C6": 4768, "spinal_cord": 345, "spinal_canal": 4137}
    for level, value in (("C5", 5), ("C6", 6), ("C7", 7)):
        mask = np.isin(label_map.array, label_map.values_of(["VERTEBRA"])) & np.isin(label_map.array, label_map.values_at_level(level))
        assert np.array_equal(mask, vert == value), level  # same grid: voxel for voxel
    # the spinous processes (sub-region 42) drawn as a fourth layer overlap the vertebrae: refused, with the count
    spinous = (subreg == 42).astype(np.uint8)
    overlap = _crop_seg_nrrd(tmp_path / "overlap.seg.nrrd", [vertebrae, discs, canal, spinous],
                             segments + [("spinous_process", 1, 3)])
    shared_c5 = int(((subreg == 42) & (vert == 5)).sum())  # the first shared voxel (in k, j, i order) is C5's
    assert shared_c5 == 531
    _expect_refused(case_dir, ["--from", str(overlap)], "overlapping layers: segment 'spinous_process' (Segment7, layer 3, "
                    f"value 1) and segment 'vertebrae_C5' (Segment0, layer 0, value 5) share {shared_c5} voxels", capsys)


# -- DICOM SEG (highdicom) from the real MRI series -------------------------------------------------


def _series():
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(DICOM_SERIES.glob("*.dcm"))]
    return sorted(datasets, key=lambda d: float(d.ImagePositionPatient[0]))


def _dicom_seg(path: Path, datasets, mask_srcj: np.ndarray, segments: list[tuple[str, object]], kind: str = "BINARY",
               pixels: np.ndarray | None = None) -> Path:
    """A SEG of ``datasets`` (slices sorted by position); ``mask_srcj`` (slice, row, column) holds 1..n.

    ``kind`` BINARY (one frame per segment and position) or LABELMAP (pixel values are segment numbers);
    ``pixels`` (slice, row, column, segment) bool overrides the BINARY frames (to make them overlap).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label, segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, (label, property_type) in enumerate(segments, start=1)
    ]
    if pixels is None:
        pixels = mask_srcj if kind == "LABELMAP" else np.stack([mask_srcj == n for n in range(1, len(segments) + 1)], axis=-1)
    with warnings.catch_warnings():  # highdicom doubts the series' PatientName "HFS" (one component)
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="workbench tests", manufacturer_model_name="test", software_versions="0",
            device_serial_number="0",
        )
    seg.save_as(path)
    return path


def _positions_lps(datasets, mask_srcj: np.ndarray) -> np.ndarray:
    """(N, 3) LPS mm of the mask's pixels from each slice's own ImagePositionPatient / orientation / spacing."""
    s, r, c = np.nonzero(mask_srcj)
    origin = np.array([[float(v) for v in datasets[i].ImagePositionPatient] for i in s])
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    row_mm, column_mm = (float(v) for v in datasets[0].PixelSpacing)
    return origin + c[:, None] * column_mm * iop[:3] + r[:, None] * row_mm * iop[3:]


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory) -> Path:
    return new_case(tmp_path_factory.mktemp("dicom") / "case", mri=DICOM_SERIES)


def test_a_dicom_seg_of_the_real_series_lands_on_the_voxels_its_frames_name(dicom_case, tmp_path):
    import shutil

    from pydicom.sr.codedict import codes

    case_dir = tmp_path / "case"
    shutil.copytree(dicom_case, case_dir)
    datasets = _series()
    mask = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), np.uint8)
    mask[10:14, 100:120, 80:110] = 1  # "vertebra_L4": 4 slices x 20 rows x 30 columns = 2400 pixels
    mask[20:22, 60:70, 90:95] = 2  # labelled "Segment 2", typed Kidney: named by its property type
    source = _dicom_seg(tmp_path / "seg.dcm", datasets, mask, [("vertebra_L4", codes.SCT.Bone), ("Segment 2", codes.SCT.Kidney)])
    seg = read_dicom_seg(source)
    assert [(s.number, s.label, s.property_type) for s in seg.segments] == [(1, "vertebra_L4", "Bone"), (2, "Segment 2", "Kidney")]
    assert [int(m.sum()) for m in seg.masks] == [2400, 100]

    assert _guess_format(source, None) == "dicom-seg"
    label_map = read_label_map_file(import_label_map(case_dir, source))
    assert _counts_by_name(label_map)["vertebra_L4"] == 2400 and _counts_by_name(label_map)["kidney"] == 100
    for value, segment_mask in ((label_map.values_of(["VERTEBRA"])[0], mask == 1), (label_map.values_of(["KIDNEY"])[0], mask == 2)):
        expected_lps = _positions_lps(datasets, segment_mask)
        # every pixel the SEG's frames name is labelled at the MRI voxel at that LPS position ...
        ijk = label_map.to_ijk(expected_lps)
        assert np.abs(ijk - np.rint(ijk)).max() < 1e-3  # same grid as the MRI (made from the same series)
        assert np.all(label_map.values_at(expected_lps) == value)
        # ... and nothing else: the labelled voxels' centroid is the pixels' centroid in mm
        np.testing.assert_allclose(_centroid_lps(label_map, label_map.array == value), expected_lps.mean(axis=0), atol=1e-3)
    print("vertebra box centroid LPS mm:", np.round(_positions_lps(datasets, mask == 1).mean(axis=0), 3))


def test_a_labelmap_dicom_seg_imports_each_segment_number(dicom_case, tmp_path):
    import shutil

    from pydicom.sr.codedict import codes

    case_dir = tmp_path / "case"
    shutil.copytree(dicom_case, case_dir)
    datasets = _series()
    mask = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), np.uint8)
    mask[15, 100:120, 80:110] = 1  # one frame only: 600 pixels
    mask[16:18, 100:110, 80:90] = 2  # 200 pixels
    source = _dicom_seg(tmp_path / "lm.dcm", datasets, mask, [("vertebrae_L3", codes.SCT.Bone), ("spinal_canal", codes.SCT.Bone)],
                        kind="LABELMAP")
    label_map = read_label_map_file(import_label_map(case_dir, source))
    assert _counts_by_name(label_map)["vertebra_L3"] == 600 and _counts_by_name(label_map)["spinal_canal"] == 200
    canal = label_map.values_of(["SPINAL_CANAL"])[0]
    assert np.all(label_map.values_at(_positions_lps(datasets, mask == 2)) == canal)


def test_dicom_seg_bad_input_exits_2_and_attaches_nothing(dicom_case, tmp_path, capsys):
    import shutil

    from pydicom.sr.codedict import codes

    case_dir = tmp_path / "case"
    shutil.copytree(dicom_case, case_dir)
    datasets = _series()
    mask = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), np.uint8)
    mask[10:12, 100:110, 80:90] = 1
    unknown = _dicom_seg(tmp_path / "unknown.dcm", datasets, mask, [("Tumour", codes.SCT.Neoplasm)])
    _expect_refused(case_dir, ["--from", str(unknown)], "segment 1 'Tumour' (type 'Neoplasm'): 'Tumour' / 'Neoplasm' is not a "
                    "name of the label vocabulary", capsys)
    moved = [copy.deepcopy(d) for d in datasets]
    for d in moved:
        d.ImagePositionPatient = [float(d.ImagePositionPatient[0]) + 1000.0, *map(float, d.ImagePositionPatient[1:])]
    far = _dicom_seg(tmp_path / "far.dcm", moved, mask, [("vertebra_L4", codes.SCT.Bone)])
    _expect_refused(case_dir, ["--from", str(far)], "does not overlap the case MRI", capsys)
    _expect_refused(case_dir, ["--from", str(sorted(DICOM_SERIES.glob("*.dcm"))[0]), "--format", "dicom-seg"],
                    "not a DICOM SEG (Modality MR)", capsys)
    both = np.stack([mask == 1, np.zeros_like(mask, bool)], axis=-1)
    both[10, 105:115, 85:95, 1] = True  # 100 pixels, 5 rows x 5 columns of them inside segment 1's box
    overlapping = _dicom_seg(tmp_path / "overlap.dcm", datasets, mask, [("vertebra_L4", codes.SCT.Bone), ("spinal_canal", codes.SCT.Bone)],
                             pixels=both)
    _expect_refused(case_dir, ["--from", str(overlapping)], "segment 2 'spinal_canal' (type 'Bone') and segment 1 'vertebra_L4' "
                    "(type 'Bone') overlap in 25 voxels", capsys)


# -- TotalSegmentator multi-label file with its task ----------------------------------------------------


def _multilabel(path: Path, values: dict[int, tuple[slice, ...]]) -> Path:
    array = np.zeros(SIZE[::-1], np.uint8)
    for value, box in values.items():
        array[box] = value
    sitk.WriteImage(_image(array), str(path))
    return path


def test_totalsegmentator_task_tables_name_the_lumbar_classes():
    total, total_mr = TOTALSEGMENTATOR_TASKS["total"], TOTALSEGMENTATOR_TASKS["total_mr"]
    assert len(total) == 117 and (total[25], total[26], total[27], total[31], total[50]) == (
        "sacrum", "vertebrae_S1", "vertebrae_L5", "vertebrae_L1", "vertebrae_C1")
    assert (total[52], total[63], total[79], total[86], total[117]) == (
        "aorta", "inferior_vena_cava", "spinal_cord", "autochthon_left", "costal_cartilages")
    assert len(total_mr) == 50 and (total_mr[19], total_mr[20], total_mr[21], total_mr[23]) == (
        "vertebrae", "intervertebral_discs", "spinal_cord", "aorta")
    assert TOTALSEGMENTATOR_TASKS["vertebrae_mr"][3] == "vertebrae_L4" and len(TOTALSEGMENTATOR_TASKS["vertebrae_mr"]) == 25


def test_a_totalsegmentator_multilabel_file_imports_with_its_task(small_case, tmp_path, capsys):
    source = _multilabel(tmp_path / "seg.nii.gz", {
        28: np.s_[2:6, 5:10, 5:10], 27: np.s_[7:11, 5:10, 5:10], 79: np.s_[2:11, 12:14, 7:9], 5: np.s_[14:16, 0:10, 0:10],
        52: np.s_[14:16, 12:15, 12:15]})
    assert main(["labels", "import", str(small_case), "--from", str(source), "--task", "total"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {e["name"]: e["voxels"] for e in summary["labels"]} == {
        "unlabelled": 8000 - 100 - 100 - 36 - 200 - 18, "soft_tissue": 200, "vertebra_L5": 100, "vertebra_L4": 100,
        "aorta": 18, "spinal_cord": 36}
    label_map = read_case_label_map(load_case(small_case), small_case)
    assert dict(label_map.names) == {0: "unlabelled", 5: "soft_tissue", 27: "vertebra_L5", 28: "vertebra_L4", 52: "aorta",
                                     79: "spinal_cord"}  # TotalSegmentator's values are kept
    assert int(label_map.bone_mask().sum()) == 200
    np.testing.assert_allclose(_centroid_lps(label_map, label_map.array == 28), [7.0, 7.0, 3.5], atol=1e-9)


def test_a_class_the_vocabulary_lacks_is_refused_unless_mapped_explicitly(small_case, tmp_path, capsys):
    source = _multilabel(tmp_path / "seg.nii.gz", {28: np.s_[2:6, 5:10, 5:10], 77: np.s_[10:12, 0:5, 0:5]})  # 77: hip_left
    _expect_refused(small_case, ["--from", str(source), "--task", "total"],
                    "label value 77 (hip_left, TotalSegmentator task 'total') has no meaning in the label vocabulary; "
                    "map it explicitly with --table FILE", capsys)
    (tmp_path / "map.csv").write_text("77,soft_tissue\n")
    path = import_label_map(small_case, source, table=tmp_path / "map.csv", task="total")
    label_map = read_label_map_file(path)
    assert dict(label_map.names) == {0: "unlabelled", 28: "vertebra_L4", 77: "soft_tissue"}
    assert _counts_by_name(label_map)["soft_tissue"] == 50 and int(label_map.bone_mask().sum()) == 100


def test_totalsegmentator_multilabel_bad_input(small_case, tmp_path, capsys):
    source = _multilabel(tmp_path / "seg.nii.gz", {28: np.s_[2:6, 5:10, 5:10], 200: np.s_[10:12, 0:5, 0:5]})
    _expect_refused(small_case, ["--from", str(source), "--task", "total"],
                    "label value 200 is not a class of TotalSegmentator task 'total' (values 1..117)", capsys)
    _expect_refused(small_case, ["--from", str(source), "--format", "totalsegmentator"],
                    "a TotalSegmentator multi-label file needs its task: --task", capsys)
    (tmp_path / "bad.csv").write_text("200,femur_head\n")
    _expect_refused(small_case, ["--from", str(source), "--task", "total", "--table", str(tmp_path / "bad.csv")],
                    "bad.csv: label value 200: 'femur_head' is not a name of the label vocabulary", capsys)
    empty = _multilabel(tmp_path / "empty.nii.gz", {})
    _expect_refused(small_case, ["--from", str(empty), "--task", "total_mr"], "empty mask", capsys)
    (tmp_path / "folder").mkdir()
    _expect_refused(small_case, ["--from", str(tmp_path / "folder"), "--task", "total"],
                    "--task goes with a TotalSegmentator multi-label file", capsys)


def test_total_mr_vertebrae_without_level_are_bone_without_a_level(small_case, tmp_path):
    source = _multilabel(tmp_path / "seg.nii.gz", {19: np.s_[2:6, 5:10, 5:10], 20: np.s_[6:8, 5:10, 5:10], 21: np.s_[2:8, 12:14, 7:9]})
    label_map = read_label_map_file(import_label_map(small_case, source, task="total_mr"))
    assert dict(label_map.names) == {0: "unlabelled", 19: "vertebra", 20: "disc", 21: "spinal_cord"}
    assert int(label_map.bone_mask().sum()) == 100 and label_map.levels == {}


# -- formats, detection, help -----------------------------------------------------------------------------


def test_help_lists_every_format(capsys):
    with pytest.raises(SystemExit):
        main(["labels", "import", "--help"])
    out = capsys.readouterr().out
    assert IMPORT_FORMATS == ("table", "totalsegmentator", "tptbox", "slicer-seg", "dicom-seg")
    for name in IMPORT_FORMATS:
        assert f"\n  {name} " in out, name
    assert "--task {total,total_mr,vertebrae_mr}" in out


def test_formats_are_guessed_from_the_source(tmp_path):
    (tmp_path / "ts").mkdir()
    (tmp_path / "tp").mkdir()
    (tmp_path / "tp" / "sub-x_seg-vert_msk.nii.gz").write_bytes(b"")
    (tmp_path / "a.seg.nrrd").write_bytes(b"NRRD0004\n")
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "c.dcm").write_bytes(b"not dicom")
    first_mr = sorted(DICOM_SERIES.glob("*.dcm"))[0]
    assert _guess_format(tmp_path / "ts", None) == "totalsegmentator"
    assert _guess_format(tmp_path / "tp", None) == "tptbox"
    assert _guess_format(tmp_path / "a.seg.nrrd", None) == "slicer-seg"
    assert _guess_format(tmp_path / "b.nii.gz", None) == "table"
    assert _guess_format(tmp_path / "b.nii.gz", None, task="total") == "totalsegmentator"
    assert _guess_format(tmp_path / "c.dcm", None) == "table"  # not DICOM: the table importer says what is wrong
    assert _guess_format(first_mr, None) == "table"  # an MR image, not a SEG


# -- notebook 01's import form ------------------------------------------------------------------------


def test_the_import_form_attaches_a_seg_nrrd_to_the_open_case_and_reports_errors(small_case, tmp_path):
    from types import SimpleNamespace

    from workbench.widgets.loader import LabelImportForm
    from workbench.widgets.session import CaseSession

    layers = np.zeros((20, 20, 20, 1), np.uint8)
    layers[5:10, 5:10, 5:10, 0] = 1
    layers[12:14, 5:10, 5:10, 0] = 2
    source = _write_seg_nrrd(tmp_path / "spine.seg.nrrd", layers, [{"name": "vertebra_L5"}, {"name": "disc_L5", "value": 2}])
    loader = SimpleNamespace(session=None)
    form = LabelImportForm(loader)
    form.source.value = str(source)
    assert form.run() is None and "open a case first" in form.status.value

    session = CaseSession(small_case)
    loader.session = session
    assert session.label_map is None
    form.table.value = str(tmp_path / "no_such.csv")
    assert form.run() is None and "--table goes with a label image" in form.status.value  # refused, nothing attached
    assert session.attachment_path("label_map") is None and not (small_case / "labels").exists()
    form.table.value = ""
    summary = form.run()
    assert {e["name"]: e["voxels"] for e in summary["labels"]} == {"unlabelled": 8000 - 125 - 50, "vertebra_L5": 125, "disc_L5": 50}
    assert "label map imported: 2 structures, 125 bone voxels" in form.status.value
    # the session sees the new map at once, with its names and positions
    label_map = session.label_map
    assert label_map.values_at_level("L5") and int(label_map.bone_mask().sum()) == 125
    np.testing.assert_allclose(_centroid_lps(label_map, label_map.mask(["DISC"])), [7.0, 7.0, 12.5], atol=1e-9)
