"""PLUS sequence files: the real PLUS recordings, round trips through every writer, every bad input.

Expected matrices and timestamps below were copied from the files' text headers; pixel facts
are recomputed here with zlib + numpy, independently of the reader.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from workbench.errors import FrameError, SequenceFileError
from workbench.io.sequence import (
    SequenceFileWarning,
    TrackedSequence,
    describe_sequence,
    read_sequence,
    write_sequence,
)

SPINE = "plus-spine-phantom-freehand/SpinePhantomFreehand.igs.mha"
NWIRE_MHA = "plus-nwire-freehand/NwirePhantomFreehand.igs.mha"
NWIRE_NRRD = "plus-nwire-freehand/NwirePhantomFreehand.igs.nrrd"
NWIRE_CROPPED = "plus-nwire-freehand/NwirePhantomFreehandCropped.igs.mha"

WRITERS = [
    ("sweep.igs.mha", True),
    ("sweep.seq.mha", False),
    ("sweep.mhd", True),
    ("sweep.mhd", False),
    ("sweep.seq.nrrd", True),
    ("sweep.igs.nrrd", False),
]
WRITER_IDS = ["mha-zlib", "mha-raw", "mhd-zraw", "mhd-raw", "nrrd-gz", "nrrd-raw"]


def plus_matrix(text: str) -> np.ndarray:
    """A PLUS transform field value (16 numbers, row major) as a 4x4 array."""
    return np.array(text.split(), dtype=float).reshape(4, 4)


def local_pixels(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels of a compressed LOCAL .mha, decoded here without the reader."""
    data = path.read_bytes()
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    return np.frombuffer(zlib.decompress(data[start:]), dtype=np.uint8).reshape(shape)


#: MetaIO compatibility fields PLUS writes with these values (FileSequenceFile.md "typical value").
PLUS_METAIO_DEFAULTS = {
    "AnatomicalOrientation": "RAI",
    "CenterOfRotation": "0 0 0",
    "ElementSpacing": "1 1 1",
    "Offset": "0 0 0",
    "TransformMatrix": "1 0 0 0 1 0 0 0 1",
}


def header_after_writing(header: dict[str, str], name: str) -> dict[str, str]:
    """MetaIO files get PLUS's compatibility fields where missing; NRRD files leave out those at PLUS's values."""
    if name.endswith(("mha", "mhd")):
        return {**PLUS_METAIO_DEFAULTS, **header}
    return {key: value for key, value in header.items() if PLUS_METAIO_DEFAULTS.get(key) != value}


def assert_same_sequence(actual: TrackedSequence, expected: TrackedSequence, *, header: bool = True) -> None:
    if expected.images is None:
        assert actual.images.shape == (len(expected), 0, 0)
    else:
        assert actual.images.dtype == expected.images.dtype
        np.testing.assert_array_equal(actual.images, expected.images)
    np.testing.assert_array_equal(actual.timestamps_s, expected.timestamps_s)
    assert set(actual.transforms) == set(expected.transforms)  # written sorted, as PLUS does
    for name, matrices in expected.transforms.items():
        np.testing.assert_array_equal(actual.transforms[name], matrices)
        np.testing.assert_array_equal(actual.transform_status[name], expected.transform_status[name])
    np.testing.assert_array_equal(actual.image_status, expected.image_status)
    np.testing.assert_array_equal(actual.frame_indices, expected.frame_indices)
    assert actual.frame_fields == expected.frame_fields
    assert actual.image_orientation == expected.image_orientation
    if header:
        assert actual.header == expected.header


def rigid_poses(count: int, seed: int) -> np.ndarray:
    """(count, 4, 4) rigid transforms with full-precision rotations and translations in mm."""
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = Rotation.random(count, random_state=seed).as_matrix()
    poses[:, :3, 3] = rng.uniform(-2000.0, 2000.0, size=(count, 3))
    return poses


def varied_sequence(images: np.ndarray | None = None) -> TrackedSequence:
    """Four frames with a gap (indices 0, 1, 3, 4), INVALID frames, a scaled Image transform, extra fields."""
    if images is None:
        images = np.random.default_rng(1).integers(0, 65535, size=(4, 5, 7), dtype=np.uint16)
    stylus = rigid_poses(4, seed=2)
    stylus[1] = np.full((4, 4), 7.0)  # junk, as PLUS may write for an INVALID pose
    stylus[2] = np.nan  # the pose was missing in that frame
    image_to_probe = np.array([[0.08, 0, 0, -20.5], [0, 0.081, 0, 3.25], [0, 0, 0.08, 0], [0, 0, 0, 1]])
    return TrackedSequence(
        images=images,
        timestamps_s=215.10218612345 + 0.0912345678901 * np.arange(4),
        transforms={
            "ProbeToTracker": rigid_poses(4, seed=3),
            "StylusToTracker": stylus,
            "ImageToProbe": np.tile(image_to_probe, (4, 1, 1)),
        },
        transform_status={"StylusToTracker": np.array([True, False, False, True])},
        image_status=np.array([True, False, True, True]),
        frame_fields={"FrameNumber": ["10", "11", None, "13"], "UnfilteredTimestamp": ["1.5", "1.6", "1.7", "1.8"]},
        header={"UltrasoundImageType": "BRIGHTNESS", "ElementSpacing": "0.5 0.5 1", "Operator note": "phantom A"},
        image_orientation="UF",
        frame_indices=np.array([0, 1, 3, 4]),
    )


# -- the real PLUS recordings ---------------------------------------------------------------


@pytest.fixture(scope="module")
def spine(shared_data) -> TrackedSequence:
    return read_sequence(shared_data / SPINE)


@pytest.fixture(scope="module")
def nwire(shared_data) -> TrackedSequence:
    return read_sequence(shared_data / NWIRE_MHA)


def test_spine_sweep_layout_and_statuses(spine):
    assert len(spine) == 21
    assert spine.images.shape == (21, 616, 820) and spine.images.dtype == np.uint8
    assert spine.image_size_px == (820, 616)
    assert spine.image_orientation == "MFA"
    assert list(spine.transforms) == ["ProbeToTracker", "ReferenceToTracker", "StylusToTracker"]
    assert all(status.all() for status in spine.transform_status.values())
    assert spine.image_status.all()
    np.testing.assert_array_equal(spine.frame_indices, np.arange(21))
    assert spine.timestamps_s[0] == 215.102186 and spine.timestamps_s[-1] == 216.947186
    assert spine.timestamps_s[17] == 216.668671
    assert spine.header["ElementSpacing"] == "1 1 1" and spine.header["AnatomicalOrientation"] == "RAI"
    assert spine.frame_fields == {}


def test_spine_matrices_are_exactly_the_file_values(spine):
    expected = {
        0: "0.231245 0.951424 -0.203269 172.641 -0.127436 -0.17751 -0.975833 -98.0022 "
        "-0.964513 0.25156 0.0801977 -22.0262 0 0 0 1",
        10: "0.231295 0.949674 -0.211237 176.808 -0.125311 -0.186235 -0.974481 -84.9811 "
        "-0.96478 0.251863 0.0759292 -21.0964 0 0 0 1",
        20: "0.238697 0.94307 -0.231609 178.871 -0.117659 -0.20866 -0.970885 -65.364 "
        "-0.96394 0.258998 0.0611545 -20.315 0 0 0 1",
    }
    for index, text in expected.items():
        np.testing.assert_array_equal(spine.transforms["ProbeToTracker"][index], plus_matrix(text))
        probe_to_tracker = spine.transform("ProbeToTracker", index)
        assert (probe_to_tracker.from_frame, probe_to_tracker.to_frame) == ("Probe", "Tracker")
        np.testing.assert_array_equal(probe_to_tracker.matrix, plus_matrix(text))
    np.testing.assert_array_equal(
        spine.transforms["ReferenceToTracker"][0],
        plus_matrix(
            "0.949536 -0.208383 0.234431 264.096 -0.195717 -0.977686 -0.076326 93.8733 "
            "0.245105 0.0265923 -0.969132 3.0506 0 0 0 1"
        ),
    )


def test_spine_pixels_match_an_independent_zlib_decode(shared_data, spine):
    independent = local_pixels(shared_data / SPINE, (21, 616, 820))
    np.testing.assert_array_equal(spine.images, independent)
    assert int(spine.images[0].sum(dtype=np.int64)) == 18036414
    assert int(spine.images.sum(dtype=np.int64)) == 381829485
    assert (spine.images[0, 200, 410], spine.images[0, 150, 400], spine.images[20, 200, 410]) == (17, 234, 17)


def test_repository_composes_the_frame_poses(spine):
    repository = spine.repository(10)
    probe = spine.transforms["ProbeToTracker"][10]
    reference = spine.transforms["ReferenceToTracker"][10]
    # the 6-digit matrices are orthonormal to ~1e-6 only, so inverses agree to ~1e-4 mm
    np.testing.assert_allclose(repository.get("ProbeToReference").matrix, np.linalg.inv(reference) @ probe, atol=1e-3)


def test_nwire_stylus_is_invalid_in_all_97_frames_and_kept(nwire):
    assert len(nwire) == 97 and nwire.images.shape == (97, 616, 820)
    assert not nwire.transform_status["StylusToTracker"].any()
    assert nwire.transform_status["ProbeToTracker"].all() and nwire.transform_status["ReferenceToTracker"].all()
    np.testing.assert_array_equal(
        nwire.transforms["StylusToTracker"][0],
        plus_matrix(
            "1 -8.43482e-005 0.000190641 0.370779 8.39344e-005 1 0.000146179 0.316166 "
            "-0.00019069 -0.000146138 1 -0.0640528 0 0 0 1"
        ),
    )
    with pytest.raises(FrameError, match=r"StylusToTracker is INVALID in frame 5 \(Seq_Frame0005\)"):
        nwire.transform("StylusToTracker", 5)
    repository = nwire.repository(5)
    assert repository.has("ProbeToReference") and not repository.has("StylusToTracker")


def test_nwire_mha_and_nrrd_hold_the_same_recording(shared_data, nwire):
    nrrd = read_sequence(shared_data / NWIRE_NRRD)
    assert_same_sequence(nrrd, nwire, header=False)
    assert nrrd.header == {"UltrasoundImageType": "BRIGHTNESS"}
    np.testing.assert_array_equal(
        nrrd.transforms["ProbeToTracker"][96],
        plus_matrix(
            "0.948947 -0.307147 0.0718355 -188.788 0.314283 0.94008 -0.132194 -99.8812 "
            "-0.026928 0.148022 0.988617 -1957.98 0 0 0 1"
        ),
    )
    assert nrrd.timestamps_s[50] == 351.031921
    assert nrrd.transforms["StylusToTracker"][50, 0, 3] == 0.0645044
    assert int(nrrd.images[0].sum(dtype=np.int64)) == 180054


def test_cropped_sweep_is_a_crop_of_the_nwire_sweep(shared_data, nwire):
    cropped = read_sequence(shared_data / NWIRE_CROPPED)
    assert len(cropped) == 20 and cropped.image_size_px == (200, 150)
    assert cropped.transform_status["ImageToCroppedImage"].all()
    image_to_cropped = plus_matrix("1 0 0 -335 0 1 0 -285 0 0 1 0 0 0 0 1")
    np.testing.assert_array_equal(cropped.transforms["ImageToCroppedImage"], np.tile(image_to_cropped, (20, 1, 1)))
    np.testing.assert_array_equal(
        cropped.transforms["ProbeToTracker"][19],
        plus_matrix(
            "0.952419 -0.270982 0.139519 -189.989 0.272804 0.96205 0.0062689 -96.1501 "
            "-0.135922 0.0320906 0.9902 -1942.62 0 0 0 1"
        ),
    )
    np.testing.assert_array_equal(cropped.transforms["ProbeToTracker"], nwire.transforms["ProbeToTracker"][:20])
    np.testing.assert_array_equal(cropped.images, local_pixels(shared_data / NWIRE_CROPPED, (20, 150, 200)))
    # ImageToCroppedImage shifts by (-335, -285) pixels: cropped[y, x] = image[y + 285, x + 335]
    np.testing.assert_array_equal(cropped.images, nwire.images[:20, 285:435, 335:535])
    assert int(cropped.images.sum(dtype=np.int64)) == 1352909


def test_every_plus_data_file_reads_or_is_refused_as_a_volume(shared_data):
    files = sorted(
        p for folder in shared_data.glob("plus-*") for p in folder.iterdir() if p.suffix in (".mha", ".nrrd")
    )
    sequences = [p for p in files if ".igs." in p.name]
    assert {p.name for p in sequences} == {
        "SpinePhantomFreehand.igs.mha",
        "NwirePhantomFreehand.igs.mha",
        "NwirePhantomFreehand.igs.nrrd",
        "NwirePhantomFreehandCropped.igs.mha",
        "BoneUltrasound_L14.igs.mha",
        "outputPlusTransverseProcessEnhancerTest.igs.mha",
    }
    for path in sequences:
        sequence = read_sequence(path)
        assert sequence.images.shape[0] == len(sequence) > 0
    for path in set(files) - set(sequences):  # PLUS reconstructions: 3D volumes
        with pytest.raises(SequenceFileError, match="3D volume|not a sequence"):
            read_sequence(path)


def test_describe_spine(shared_data):
    info = describe_sequence(shared_data / SPINE)
    assert json.loads(json.dumps(info, allow_nan=False)) == info
    assert info == {
        "kind": "sequence",
        "path": str(shared_data / SPINE),
        "container": "metaio",
        "frames": 21,
        "tracking_only": False,
        "image_size_px": [820, 616],
        "channels": 1,
        "pixel_type": "uint8",
        "image_orientation": "MFA",
        "compressed": True,
        "transforms": {
            name: {"ok": 21, "invalid": 0} for name in ("ProbeToTracker", "ReferenceToTracker", "StylusToTracker")
        },
        "timestamp_range_s": [215.102186, 216.947186],
        "image_status": {"ok": 21, "invalid": 0},
        "frame_index_gaps": [],
        "frame_index_gap_count": 0,
        "repeated_fields": [],
    }


def test_describe_nwire_nrrd_counts_invalid_poses(shared_data):
    info = describe_sequence(shared_data / NWIRE_NRRD)
    assert info["container"] == "nrrd" and info["frames"] == 97
    assert info["transforms"]["StylusToTracker"] == {"ok": 0, "invalid": 97}
    assert info["transforms"]["ProbeToTracker"] == {"ok": 97, "invalid": 0}
    assert info["timestamp_range_s"] == [345.627957, 355.783014]


# -- TrackedSequence API ----------------------------------------------------------------------


def test_sequence_api_errors_and_defaults():
    sequence = TrackedSequence(images=None, timestamps_s=[0.0, 0.1], transforms={"ProbeToTracker": rigid_poses(2, 4)})
    assert len(sequence) == 2 and sequence.image_size_px == (0, 0) and not sequence.has_images
    assert sequence.transform_status["ProbeToTracker"].tolist() == [True, True]
    # no images: no image status can be OK
    assert sequence.image_status.tolist() == [False, False] and sequence.frame_indices.tolist() == [0, 1]
    with_images = TrackedSequence(images=np.zeros((2, 1, 1), np.uint8), timestamps_s=[0.0, 0.1])
    assert with_images.has_images and with_images.image_status.tolist() == [True, True]
    assert sequence.image_orientation == "MF"
    with pytest.raises(FrameError, match="no transform 'ReferenceToTracker'.*ProbeToTracker"):
        sequence.transform("ReferenceToTracker", 0)
    with pytest.raises(FrameError, match="frame index 2 out of range: the sequence has 2 frames"):
        sequence.transform("ProbeToTracker", 2)
    with pytest.raises(FrameError, match="out of range"):
        sequence.repository(-1)


def test_repository_parses_names_as_plus_does_and_skips_unparseable_ones():
    sequence = TrackedSequence(
        images=None,
        timestamps_s=[0.0],
        transforms={
            "ToolToTracker": rigid_poses(1, 5),  # PLUS's own example name: Tool -> Tracker
            "ProbeToTracker": rigid_poses(1, 6),
            "ProbeTrackerPose": rigid_poses(1, 7),  # not a FromToTo name: kept in .transforms only
        },
    )
    assert sorted(t.name for t in sequence.repository(0)) == ["ProbeToTracker", "ToolToTracker"]
    assert "ProbeTrackerPose" in sequence.transforms


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "compress"), WRITERS, ids=WRITER_IDS)
def test_round_trip_keeps_everything(tmp_path, name, compress):
    original = varied_sequence()
    written = write_sequence(original, tmp_path / name, compress=compress)
    assert written == tmp_path / name
    again = read_sequence(written)
    assert_same_sequence(again, original, header=False)
    assert again.header == header_after_writing(original.header, name)
    info = describe_sequence(written)
    assert info["frame_index_gaps"] == [2] and info["frame_index_gap_count"] == 1
    assert info["compressed"] is compress and info["pixel_type"] == "uint16"
    assert info["transforms"]["StylusToTracker"] == {"ok": 2, "invalid": 2}


@pytest.mark.parametrize(("name", "compress"), WRITERS, ids=WRITER_IDS)
def test_round_trip_of_a_real_recording(shared_data, tmp_path, name, compress):
    original = read_sequence(shared_data / NWIRE_CROPPED)
    again = read_sequence(write_sequence(original, tmp_path / name, compress=compress))
    assert_same_sequence(again, original, header=False)
    assert again.header == header_after_writing(original.header, name)


def test_spine_round_trip_through_nrrd_and_back_is_exact(shared_data, tmp_path, spine):
    via_nrrd = read_sequence(write_sequence(spine, tmp_path / "spine.seq.nrrd"))
    assert via_nrrd.header == {}  # PLUS's MetaIO compatibility defaults are implied in NRRD
    back = read_sequence(write_sequence(via_nrrd, tmp_path / "spine.igs.mha"))
    assert_same_sequence(back, spine)


@pytest.mark.parametrize("compress", [True, False])
def test_mhd_writes_its_data_file_beside_the_header(tmp_path, compress):
    write_sequence(varied_sequence(), tmp_path / "sweep.mhd", compress=compress)
    data_name = "sweep.zraw" if compress else "sweep.raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["sweep.mhd", data_name])
    header = (tmp_path / "sweep.mhd").read_text()
    assert header.endswith(f"ElementDataFile = {data_name}\n")
    assert f"CompressedData = {compress}\n" in header
    raw = (tmp_path / data_name).read_bytes()
    pixels = zlib.decompress(raw) if compress else raw
    np.testing.assert_array_equal(np.frombuffer(pixels, "<u2").reshape(4, 5, 7), varied_sequence().images)


def test_written_header_follows_plus_field_order(shared_data, tmp_path):
    source = shared_data / NWIRE_CROPPED
    written = write_sequence(read_sequence(source), tmp_path / "cropped.igs.mha")

    def header_lines(path: Path) -> list[str]:
        data = path.read_bytes()
        return data[: data.index(b"ElementDataFile")].decode().splitlines()

    original, ours = header_lines(source), header_lines(written)
    assert [line.split(" = ")[0] for line in ours] == [line.split(" = ")[0] for line in original]
    fixed = [line.rstrip() for line in original if not line.startswith(("Seq_", "CompressedDataSize"))]
    assert [line for line in ours if not line.startswith(("Seq_", "CompressedDataSize"))] == fixed
    assert "Seq_Frame0000_ImageToCroppedImageTransform = 1 0 0 -335 0 1 0 -285 0 0 1 0 0 0 0 1" in ours
    assert ours[-1] == "Seq_Frame0019_ImageStatus = OK"


def test_nrrd_header_as_plus_writes_it(tmp_path):
    written = write_sequence(varied_sequence(), tmp_path / "sweep.seq.nrrd")
    text = written.read_bytes().split(b"\n\n")[0].decode()
    assert text.startswith("NRRD0004\n")
    for line in (
        "encoding: gz",
        "kinds: domain domain list",
        "sizes: 7 5 4",
        "type: uint16",
        "ultrasound image orientation:=UF",
        "ultrasound image type:=BRIGHTNESS",
        "Seq_Frame0004_Status:=OK",
        "Seq_Frame0001_Status:=INVALID",
        "Seq_Frame0001_StylusToTrackerTransformStatus:=INVALID",
    ):
        assert line in text.splitlines()
    assert "Seq_Frame0002_" not in text


@pytest.mark.parametrize(("name", "compress"), WRITERS, ids=WRITER_IDS)
def test_tracker_only_round_trip(tmp_path, name, compress):
    original = TrackedSequence(
        images=None,
        timestamps_s=[10.0, 10.05, 10.1],
        transforms={"StylusToTracker": rigid_poses(3, 8)},
        image_status=np.zeros(3, dtype=bool),
    )
    again = read_sequence(write_sequence(original, tmp_path / name, compress=compress))
    assert again.images.shape == (3, 0, 0)
    assert_same_sequence(again, original, header=False)
    assert again.header == header_after_writing({}, name)
    assert describe_sequence(tmp_path / name)["image_size_px"] == [0, 0]


@pytest.mark.parametrize(
    "compression",
    ["CompressedData = True\nCompressedDataSize = 0\n", "CompressedData = True\n", "CompressedData = False\n", ""],
)
def test_reads_a_plus_tracker_only_file(tmp_path, compression):
    path = tmp_path / "tracking.igs.mha"
    frames = "".join(
        f"Seq_Frame{i:04d}_StylusToTrackerTransform = 1 0 0 {i} 0 1 0 0 0 0 1 0 0 0 0 1\n"
        f"Seq_Frame{i:04d}_StylusToTrackerTransformStatus = OK\n"
        f"Seq_Frame{i:04d}_Timestamp = {i}.5\nSeq_Frame{i:04d}_ImageStatus = INVALID\n"
        for i in range(3)
    )
    path.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\n"
        f"{compression}DimSize = 0 0 3\nElementType = MET_UCHAR\nUltrasoundImageOrientation = MF\n"
        f"{frames}ElementDataFile = LOCAL\n"
    )
    sequence = read_sequence(path)
    assert sequence.images.shape == (3, 0, 0) and not sequence.image_status.any()
    assert sequence.timestamps_s.tolist() == [0.5, 1.5, 2.5]
    assert sequence.transforms["StylusToTracker"][:, 0, 3].tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]
)
@pytest.mark.parametrize("name", ["p.mha", "p.nrrd"])
def test_pixel_types_round_trip(tmp_path, dtype, name):
    values = np.random.default_rng(9).normal(0, 100, size=(2, 3, 4)).astype(dtype)
    sequence = TrackedSequence(images=values, timestamps_s=[0.0, 1.0])
    again = read_sequence(write_sequence(sequence, tmp_path / name))
    assert again.images.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(again.images, values)


@pytest.mark.parametrize("name", ["rgb.mha", "rgb.nrrd"])
def test_multi_channel_round_trip(tmp_path, name):
    rgb = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    again = read_sequence(write_sequence(TrackedSequence(images=rgb, timestamps_s=[0.0, 1.0]), tmp_path / name))
    assert again.image_size_px == (4, 3)
    np.testing.assert_array_equal(again.images, rgb)
    assert describe_sequence(tmp_path / name)["channels"] == 3


def _frame_lines(count: int, separator: str = " = ", status: str = "ImageStatus") -> str:
    return "".join(
        f"Seq_Frame{i:04d}_ProbeToTrackerTransform{separator}1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n"
        f"Seq_Frame{i:04d}_Timestamp{separator}{i}\nSeq_Frame{i:04d}_{status}{separator}OK\n"
        for i in range(count)
    )


def test_reads_big_endian_short_pixels(tmp_path):
    pixels = np.array([[[-2, 300], [4000, -32768]]], dtype=">i2")
    mha = tmp_path / "big.mha"
    mha.write_bytes(
        b"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = True\n"
        b"DimSize = 2 2 1\nElementType = MET_SHORT\n"
        + _frame_lines(1).encode()
        + b"ElementDataFile = LOCAL\n"
        + pixels.tobytes()
    )
    nrrd = tmp_path / "big.nrrd"
    nrrd.write_bytes(
        b"NRRD0004\ndimension: 3\ntype: short\nsizes: 2 2 1\nendian: big\nencoding: raw\n"
        + _frame_lines(1, ":=", "Status").encode()
        + b"\n"
        + pixels.tobytes()
    )
    for path in (mha, nrrd):
        images = read_sequence(path).images
        assert images.dtype == np.int16
        assert images.tolist() == [[[-2, 300], [4000, -32768]]]


def test_reads_padded_crlf_headers_with_three_digit_exponents(tmp_path):
    pixels = np.arange(12, dtype=np.float32)
    header = (
        "ObjectType = Image\r\nNDims = 3  \r\nBinaryData = True\r\nCompressedData = True\r\n"
        "DimSize = 3 2      2              \r\nKinds = domain domain list\r\nElementType = MET_FLOAT\r\n"
        "UltrasoundImageOrientation = MN   \r\n"
        "Seq_Frame0000_ProbeToTrackerTransform = 1 -8.4e-005 0 1.5E+002 8.4e-005 1 0 0 0 0 1 0 0 0 0 1 \r\n"
        "Seq_Frame0000_Timestamp = 0.000100   \r\nSeq_Frame0000_FrameNumber =   42  \r\n"
        "Seq_Frame0003_ProbeToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\r\n"
        "Seq_Frame0003_ProbeToTrackerTransformStatus = INVALID\r\nSeq_Frame0003_Timestamp = 1e-3\r\n"
        "ElementDataFile = LOCAL\r\n"
    )
    path = tmp_path / "odd.seq.mha"
    path.write_bytes(header.encode() + zlib.compress(pixels.tobytes()))
    sequence = read_sequence(path)
    assert sequence.transforms["ProbeToTracker"][0, 0, 1] == -8.4e-05
    assert sequence.transforms["ProbeToTracker"][0, 0, 3] == 150.0
    assert sequence.timestamps_s.tolist() == [0.0001, 0.001]
    assert sequence.frame_fields == {"FrameNumber": ["42", None]}
    assert sequence.frame_indices.tolist() == [0, 3]
    assert sequence.transform_status["ProbeToTracker"].tolist() == [True, False]
    assert sequence.image_orientation == "MN"
    np.testing.assert_array_equal(sequence.images, pixels.reshape(2, 2, 3))


def test_failed_write_leaves_the_existing_file_alone(tmp_path):
    path = write_sequence(varied_sequence(), tmp_path / "sweep.igs.mha")
    before = path.read_bytes()
    broken = varied_sequence()
    broken.timestamps_s[2] = np.nan
    with pytest.raises(SequenceFileError, match="Seq_Frame0003_Timestamp = nan is not a finite time"):
        write_sequence(broken, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.igs.mha"]


# -- malformed files ------------------------------------------------------------------------

SMALL_POSE = "0 -1 0 10 1 0 0 20 0 0 1 30 0 0 0 1"


def small_sequence() -> TrackedSequence:
    """Two 3x2 uint8 frames with one rigid ProbeToTracker pose (written as SMALL_POSE)."""
    return TrackedSequence(
        images=np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
        timestamps_s=[1.5, 2.25],
        transforms={"ProbeToTracker": np.tile(plus_matrix(SMALL_POSE), (2, 1, 1))},
    )


def write_variant(tmp_path: Path, name: str, compress: bool, edits) -> Path:
    """Write the small sequence, then apply text edits (old, new) to the file's bytes."""
    path = write_sequence(small_sequence(), tmp_path / name, compress=compress)
    data = path.read_bytes()
    for old, new in edits:
        assert old in data, old
        data = data.replace(old, new, 1)
    path.write_bytes(data)
    return path


FRAME1_POSE = b"Seq_Frame0001_ProbeToTrackerTransform = " + SMALL_POSE.encode()
END = b"ElementDataFile = LOCAL\n"

MHA_CASES = {
    "ndims": ([(b"NDims = 3", b"NDims = 4")], "NDims = 4: only sequences of 2D frames"),
    "dimsize-count": ([(b"DimSize = 3 2 2", b"DimSize = 3 2")], "DimSize = '3 2': expected 3 non-negative integers"),
    "dimsize-text": ([(b"DimSize = 3 2 2", b"DimSize = 3 x 2")], "expected 3 non-negative integers"),
    "dimsize-huge": ([(b"DimSize = 3 2 2", b"DimSize = 3 99999999999 2")], "an axis size is too large"),
    "too-short": ([(b"DimSize = 3 2 2", b"DimSize = 3 3 2")], "pixel data too short: 12 bytes stored"),
    "too-long": ([(b"DimSize = 3 2 2", b"DimSize = 3 1 2")], "pixel data too long: 12 bytes stored"),
    "element-type": ([(b"MET_UCHAR", b"MET_BOGUS")], "unknown ElementType 'MET_BOGUS'"),
    "no-element-type": ([(b"ElementType = MET_UCHAR\n", b"")], "missing ElementType field"),
    "binary": ([(b"BinaryData = True", b"BinaryData = False")], "BinaryData = False"),
    "bool": (
        [(b"CompressedData = False", b"CompressedData = Maybe")],
        "CompressedData = 'Maybe': expected True or False",
    ),
    "header-size": ([(END, b"HeaderSize = 10\n" + END)], "HeaderSize = 10 is not supported"),
    "volume": ([(b"Kinds = domain domain list", b"Kinds = domain domain domain")], "a 3D volume, not a sequence"),
    "kinds-count": ([(b"Kinds = domain domain list", b"Kinds = domain list")], "expected 3 axis kinds"),
    "channels": ([(b"ElementNumberOfChannels = 1", b"ElementNumberOfChannels = 0")], "expected a positive integer"),
    "data-list": ([(END, b"ElementDataFile = LIST\n")], "lists and file patterns are not supported"),
    "data-empty": ([(END, b"ElementDataFile =\n")], "ElementDataFile is empty"),
    "data-missing": ([(END, b"ElementDataFile = gone.raw\n")], "data file gone.raw (ElementDataFile) not found"),
    "object-type": ([(END, b"ObjectType = Mesh\n" + END)], "ObjectType = 'Mesh': a sequence file is an Image"),
    "no-pixel-type-but-pixels": (
        [(b"MET_UCHAR", b"MET_OTHER")],
        "ElementType = MET_OTHER (no pixel type, a tracking-only file) but DimSize = 3 2 2 asks for 3 x 2 pixels",
    ),
    "no-equals": ([(END, b"just some words\n" + END)], "is not 'Key = Value': 'just some words'"),
    "control": ([(END, b"Note = a\x01b\n" + END)], "contains control characters"),
    "frame-count": ([(b"DimSize = 3 2 2", b"DimSize = 3 2 3")], "sizes give 3 frames but per-frame fields exist for 2"),
    "no-frames": ([(b"Seq_Frame", b"Xeq_Frame")] * 8, "no per-frame fields"),
    "malformed-frame-field": ([(b"Seq_Frame0001_Timestamp", b"Seq_FrameX_Timestamp")], "malformed per-frame field"),
    "frame-index": ([(b"Seq_Frame0001_Timestamp", b"Seq_Frame12345678901_Timestamp")], "frame index too large"),
    "orientation": ([(b"UltrasoundImageOrientation = MF", b"UltrasoundImageOrientation = QQ")], "'QQ' is not a PLUS"),
    "matrix-count": (
        [(FRAME1_POSE, FRAME1_POSE[:-2])],
        "Seq_Frame0001_ProbeToTrackerTransform: 15 values, expected 16",
    ),
    "matrix-text": (
        [(FRAME1_POSE, FRAME1_POSE.replace(b" 10 ", b" ten "))],
        "Seq_Frame0001_ProbeToTrackerTransform: non-numeric value 'ten'",
    ),
    "matrix-nan": (
        [(FRAME1_POSE, FRAME1_POSE.replace(b" 10 ", b" nan "))],
        "Seq_Frame0001_ProbeToTrackerTransform: NaN or infinity in a transform whose status is OK",
    ),
    "matrix-inf": ([(FRAME1_POSE, FRAME1_POSE.replace(b" 10 ", b" -inf "))], "NaN or infinity"),
    "matrix-scaled": (
        [(FRAME1_POSE, FRAME1_POSE.replace(b"0 -1 0", b"0 -1.01 0"))],
        "Seq_Frame0001_ProbeToTrackerTransform: rotation part is not orthonormal",
    ),
    "matrix-last-row": (
        [(FRAME1_POSE, FRAME1_POSE.replace(b"0 0 0 1", b"0 0 0.5 1"))],
        "Seq_Frame0001_ProbeToTrackerTransform: last row is 0 0 0.5 1, not 0 0 0 1",
    ),
    "status-without-matrix": (
        [(FRAME1_POSE + b"\n", b"")],
        "Seq_Frame0001_ProbeToTrackerTransformStatus is OK but the frame has no",
    ),
    "timestamp-text": (
        [(b"Seq_Frame0001_Timestamp = 2.25", b"Seq_Frame0001_Timestamp = soon")],
        "Seq_Frame0001_Timestamp = 'soon' is not a number",
    ),
    "timestamp-inf": (
        [(b"Seq_Frame0001_Timestamp = 2.25", b"Seq_Frame0001_Timestamp = inf")],
        "Seq_Frame0001_Timestamp = inf is not a finite time",
    ),
    "timestamp-missing": (
        [(b"Seq_Frame0001_Timestamp = 2.25\n", b"")],
        "Seq_Frame0001_Timestamp is missing",
    ),
    "truncated-header": ([(END, b"")], "truncated header: no 'ElementDataFile = ...' line"),
}


@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_malformed_mha_is_refused_with_a_specific_message(tmp_path, case):
    edits, message = MHA_CASES[case]
    path = write_variant(tmp_path, "bad.igs.mha", False, edits)
    with pytest.raises(SequenceFileError, match=_literal(message)) as caught:
        read_sequence(path)
    assert caught.value.path == str(path)


ZLIB_CASES = {
    "compressed-size": "CompressedDataSize = {size_plus_one} but {size} bytes of pixel data are stored",
    "inflates-short": "compressed pixel data inflates to 12 bytes, the header's sizes need 16",
    "inflates-long": "compressed pixel data inflates to more than the 6 bytes",
    "truncated-stream": "truncated compressed pixel data: the stream ends after",
    "corrupt-stream": "compressed pixel data is corrupt (zlib:",
    "stray-bytes": "2 stray bytes after the end of the compressed pixel data",
    "impossible-ratio": "cannot inflate to the 1200000000 bytes",
}


@pytest.mark.parametrize("case", sorted(ZLIB_CASES))
def test_bad_compressed_pixels_are_refused(tmp_path, case):
    path = write_sequence(small_sequence(), tmp_path / "bad.igs.mha", compress=True)
    data = path.read_bytes()
    head, pixels = data[: data.index(END) + len(END)], data[data.index(END) + len(END) :]
    size_line = f"CompressedDataSize = {len(pixels)}\n".encode()
    if case == "compressed-size":
        head = head.replace(size_line, f"CompressedDataSize = {len(pixels) + 1}\n".encode())
    elif case == "inflates-short":
        head = head.replace(b"DimSize = 3 2 2", b"DimSize = 4 2 2")
    elif case == "inflates-long":
        head = head.replace(b"DimSize = 3 2 2", b"DimSize = 3 1 2")
    elif case == "truncated-stream":
        head, pixels = head.replace(size_line, b""), pixels[:-6]
    elif case == "corrupt-stream":
        pixels = pixels[:2] + bytes(b ^ 0x5A for b in pixels[2:])
    elif case == "stray-bytes":
        head, pixels = head.replace(size_line, b""), pixels + b"xx"
    elif case == "impossible-ratio":
        head = head.replace(b"DimSize = 3 2 2", b"DimSize = 30000 20000 2")
    path.write_bytes(head + pixels)
    message = ZLIB_CASES[case].format(size=len(pixels), size_plus_one=len(pixels) + 1)
    with pytest.raises(SequenceFileError, match=_literal(message)):
        read_sequence(path)


NRRD_CASES = {
    "magic": ([(b"NRRD0004", b"NRRDXXXX")], "not a NRRD file: first line is 'NRRDXXXX'"),
    "dimension": ([(b"dimension: 3", b"dimension: 2")], "dimension = 2: only sequences of 2D frames"),
    "volume": ([(b"kinds: domain domain list", b"kinds: domain domain domain")], "a 3D volume, not a sequence"),
    "volume-sequence": (
        [
            (b"dimension: 3", b"dimension: 4"),
            (b"kinds: domain domain list", b"kinds: domain domain domain list"),
            (b"sizes: 3 2 2", b"sizes: 3 2 1 2"),
        ],
        "dimension = 4 without a leading channel axis",
    ),
    "kinds-count": ([(b"kinds: domain domain list", b"kinds: domain list")], "expected 3 axis kinds"),
    "type": ([(b"type: uint8", b"type: uint9")], "unknown type 'uint9'"),
    "encoding": ([(b"encoding: raw", b"encoding: bzip2")], "encoding 'bzip2' is not supported"),
    "detached": (
        [(b"type: uint8\n", b"type: uint8\ndata file: pixels.raw\n")],
        "detached NRRD data (data file: pixels.raw)",
    ),
    "byte-skip": ([(b"type: uint8\n", b"type: uint8\nbyte skip: -1\n")], "byte skip: -1 is not supported"),
    "endian-missing": ([(b"type: uint8", b"type: uint16"), (b"endian: little\n", b"")], "missing NRRD field 'endian'"),
    "endian-bad": ([(b"endian: little", b"endian: middle")], "endian: 'middle': expected little or big"),
    "sizes-missing": ([(b"sizes: 3 2 2\n", b"")], "missing NRRD field 'sizes'"),
    "line": ([(b"type: uint8\n", b"type: uint8\nbogus line\n")], "is neither 'field: value' nor 'key:=value'"),
    "empty-key": ([(b"type: uint8\n", b"type: uint8\n:=value\n")], "has an empty field name"),
    "no-pixel-type-but-pixels": (
        [(b"type: uint8", b"type: none")],
        "type: none (no pixel type, a tracking-only file) but sizes ask for 3 x 2 pixels per frame",
    ),
    "truncated-header": ([(b"OK\n\n", b"OK\n")], "truncated header: no blank line ends the NRRD header"),
    "too-short": ([(b"sizes: 3 2 2", b"sizes: 4 2 2")], "pixel data too short"),
}


@pytest.mark.parametrize("case", sorted(NRRD_CASES))
def test_malformed_nrrd_is_refused_with_a_specific_message(tmp_path, case):
    edits, message = NRRD_CASES[case]
    path = write_variant(tmp_path, "bad.seq.nrrd", False, edits)
    if case == "truncated-header":
        path.write_bytes(path.read_bytes()[:-12])  # drop the pixels too
    with pytest.raises(SequenceFileError, match=_literal(message)):
        read_sequence(path)


def test_gzip_nrrd_with_wrong_sizes_is_refused(tmp_path):
    path = write_variant(tmp_path, "bad.seq.nrrd", True, [(b"sizes: 3 2 2", b"sizes: 4 2 2")])
    with pytest.raises(SequenceFileError, match="inflates to 12 bytes, the header's sizes need 16"):
        read_sequence(path)


def test_nrrd_image_status_is_the_status_field(tmp_path):
    path = write_variant(
        tmp_path, "status.seq.nrrd", True, [(b"Seq_Frame0001_Status:=OK", b"Seq_Frame0001_Status:=INVALID")]
    )
    assert read_sequence(path).image_status.tolist() == [True, False]


def test_invalid_frames_are_not_validated_but_kept(tmp_path):
    junk = b"Seq_Frame0001_ProbeToTrackerTransform = 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3"
    path = write_variant(
        tmp_path,
        "junk.igs.mha",
        False,
        [
            (FRAME1_POSE, junk),
            (
                b"Seq_Frame0001_ProbeToTrackerTransformStatus = OK",
                b"Seq_Frame0001_ProbeToTrackerTransformStatus = INVALID",
            ),
        ],
    )
    sequence = read_sequence(path)
    assert sequence.transform_status["ProbeToTracker"].tolist() == [True, False]
    np.testing.assert_array_equal(sequence.transforms["ProbeToTracker"][1], np.full((4, 4), 3.0))
    unreadable = write_variant(
        tmp_path,
        "unreadable.igs.mha",
        False,
        [
            (FRAME1_POSE, b"Seq_Frame0001_ProbeToTrackerTransform = -1.#IND"),
            (
                b"Seq_Frame0001_ProbeToTrackerTransformStatus = OK",
                b"Seq_Frame0001_ProbeToTrackerTransformStatus = MISSING",
            ),
        ],
    )
    sequence = read_sequence(unreadable)
    assert np.isnan(sequence.transforms["ProbeToTracker"][1]).all()
    assert sequence.transform_status["ProbeToTracker"].tolist() == [True, False]


def test_scaled_transforms_from_pixel_frames_are_accepted(tmp_path):
    sequence = small_sequence()
    sequence.transforms["ImageToProbe"] = np.tile(np.diag([0.08, 0.08, 0.08, 1.0]), (2, 1, 1))
    again = read_sequence(write_sequence(sequence, tmp_path / "scaled.igs.mha"))
    assert again.transforms["ImageToProbe"][0, 0, 0] == 0.08
    assert again.transform("ImageToProbe", 1).scale.tolist() == [0.08, 0.08, 0.08]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"", "file is empty"),
        (b"hello world\n", "not a PLUS sequence file: starts with b'hello world'"),
        (b"ObjectType = Mesh\nNDims = 3\n", "not a PLUS sequence file: starts with b'ObjectType = Mesh'"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "sweep.igs.mha"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SequenceFileError, match=_literal(message)):
        read_sequence(path)
    with pytest.raises(SequenceFileError, match=_literal(message)):
        describe_sequence(path)


def test_mhd_without_its_data_file_is_refused(tmp_path):
    header = write_sequence(small_sequence(), tmp_path / "sweep.mhd", compress=False)
    (tmp_path / "sweep.raw").unlink()
    with pytest.raises(SequenceFileError, match=r"data file sweep.raw \(ElementDataFile\) not found"):
        read_sequence(header)


def test_a_folder_is_not_a_sequence(tmp_path):
    with pytest.raises(SequenceFileError, match="is a folder, not a sequence file"):
        read_sequence(tmp_path)


def test_describe_checks_sizes_without_decoding(tmp_path):
    path = write_variant(tmp_path, "short.igs.mha", False, [(b"DimSize = 3 2 2", b"DimSize = 3 3 2")])
    with pytest.raises(SequenceFileError, match="pixel data too short"):
        describe_sequence(path)


# -- what the writer refuses ------------------------------------------------------------------


def _edit(change):
    sequence = small_sequence()
    change(sequence)
    return sequence


WRITE_CASES = {
    "no-frames": (lambda s: setattr(s, "timestamps_s", np.array([])), "timestamps_s must be a non-empty (N,) array"),
    "images-count": (
        lambda s: setattr(s, "images", s.images[:1]),
        "images must be an (N, H, W) or (N, H, W, C) array with N = 2",
    ),
    "pixel-type": (lambda s: setattr(s, "images", s.images > 3), "cannot store bool pixels"),
    "matrix-shape": (
        lambda s: s.transforms.update(ProbeToTracker=np.zeros((2, 3, 4))),
        "transforms['ProbeToTracker'] has shape (2, 3, 4), expected (2, 4, 4)",
    ),
    "status-shape": (
        lambda s: s.transform_status.update(ProbeToTracker=np.ones(3, bool)),
        "transform_status['ProbeToTracker'] has shape (3,), expected (2,)",
    ),
    "orphan-status": (
        lambda s: s.transform_status.update(NeedleToTracker=np.ones(2, bool)),
        "names without a transform: NeedleToTracker",
    ),
    "not-rigid": (
        lambda s: s.transforms["ProbeToTracker"].__setitem__((1, 0, 0), 2.0),
        "Seq_Frame0001_ProbeToTrackerTransform: rotation part is not orthonormal",
    ),
    "timestamp": (
        lambda s: setattr(s, "timestamps_s", np.array([1.0, np.inf])),
        "Seq_Frame0001_Timestamp = inf is not a finite time",
    ),
    "indices": (lambda s: setattr(s, "frame_indices", np.array([3, 3])), "frame_indices must increase strictly"),
    "reserved-field": (
        lambda s: s.frame_fields.update(Timestamp=["1", "2"]),
        "frame field 'Timestamp' would be read back as",
    ),
    "transform-like-field": (lambda s: s.frame_fields.update(NoteTransform=["1", "2"]), "would be read back as"),
    "field-length": (
        lambda s: s.frame_fields.update(FrameNumber=["1"]),
        "frame_fields['FrameNumber'] must be a list of 2 values",
    ),
    "field-newline": (
        lambda s: s.frame_fields.update(Note=["a\nb", None]),
        "frame field 'Note' value 'a\\nb' must be a one-line string",
    ),
    "field-name": (lambda s: s.frame_fields.update({"A=B": ["1", "2"]}), "frame field name 'A=B' cannot be written"),
    "header-layout": (lambda s: s.header.update(DimSize="1 1 1"), "header field 'DimSize' is written from the images"),
    "header-orientation": (
        lambda s: s.header.update(UltrasoundImageOrientation="MF"),
        "is written from the images, image_orientation",
    ),
    "header-padded": (lambda s: s.header.update(Note=" x"), "header field 'Note' value ' x' must be a one-line string"),
    "orientation": (lambda s: setattr(s, "image_orientation", "LR"), "'LR' is not a PLUS orientation"),
}


@pytest.mark.parametrize("case", sorted(WRITE_CASES))
def test_writer_refuses_what_would_not_read_back(tmp_path, case):
    change, message = WRITE_CASES[case]
    with pytest.raises(SequenceFileError, match=_literal(message)):
        write_sequence(_edit(change), tmp_path / "out.igs.mha")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_unknown_extensions(tmp_path):
    with pytest.raises(SequenceFileError, match="cannot write a sequence with this extension"):
        write_sequence(small_sequence(), tmp_path / "out.png")


def _literal(message: str) -> str:
    return re.escape(message)


@pytest.mark.parametrize(
    "orientation, expected",
    [
        ("MF", [[1, 2, 3], [4, 5, 6]]),
        ("MFA", [[1, 2, 3], [4, 5, 6]]),
        ("UF", [[3, 2, 1], [6, 5, 4]]),
        ("MN", [[4, 5, 6], [1, 2, 3]]),
        ("UNA", [[6, 5, 4], [3, 2, 1]]),
    ],
)
def test_images_mf_flips_into_the_image_frame_orientation(orientation, expected):
    stored = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    sequence = TrackedSequence(images=stored, timestamps_s=[0.0], image_orientation=orientation)
    np.testing.assert_array_equal(sequence.images_mf()[0], expected)


def test_images_mf_refuses_rf_and_tracker_only():
    rf = TrackedSequence(images=np.zeros((1, 2, 3), np.uint8), timestamps_s=[0.0], image_orientation="FM")
    with pytest.raises(SequenceFileError, match="FM is RF data"):
        rf.images_mf()
    with pytest.raises(SequenceFileError, match="tracking-only sequence: no images .*1 frame of transforms only"):
        TrackedSequence(images=None, timestamps_s=[0.0]).images_mf()


# -- repeated fields: warn, keep the last value (as PLUS's readers and MetaIO do) --------------

KINDS = b"Kinds = domain domain list\n"


def _repeat_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SequenceFileWarning)]


def test_kinds_twice_warns_with_both_values_and_uses_the_last(tmp_path):
    path = write_variant(tmp_path, "kinds.igs.mha", False, [(KINDS, b"Kinds = domain domain domain\n" + KINDS)])
    with pytest.warns(SequenceFileWarning) as record:
        sequence = read_sequence(path)
    assert _repeat_warnings(record) == [
        f"{path}: field Kinds appears twice (header lines 9 and 10: 'domain domain domain', then "
        "'domain domain list'); using the last value, as PLUS does"
    ]
    np.testing.assert_array_equal(sequence.images, small_sequence().images)
    # the same two lines the other way round: the last says "a 3D volume", so the file is refused
    flipped = write_variant(tmp_path, "flipped.igs.mha", False, [(KINDS, KINDS + b"Kinds = domain domain domain\n")])
    with pytest.raises(SequenceFileError) as caught:
        read_sequence(flipped)
    assert caught.value.problem == (
        "Kinds = domain domain domain: a 3D volume, not a sequence of 2D frames (last kind must be list or time) "
        "(Kinds is given 2 times, the last one is used, as PLUS does)"
    )


def test_repeated_custom_and_per_frame_fields_keep_the_last_value(tmp_path):
    path = write_variant(
        tmp_path,
        "repeated.igs.mha",
        False,
        [
            (b"UltrasoundImageOrientation = MF\n", b"UltrasoundImageOrientation = UF\nUltrasoundImageOrientation = MF\n"),
            (END, b"Operator = A\nOperator = B\nOperator = C\n" + END),
            (b"Seq_Frame0001_Timestamp = 2.25\n", b"Seq_Frame0001_Timestamp = 9\nSeq_Frame0001_Timestamp = 2.5\n"),
            (FRAME1_POSE, FRAME1_POSE + b"\n" + FRAME1_POSE.replace(b" 10 ", b" 11 ")),
        ],
    )
    with pytest.warns(SequenceFileWarning) as record:
        sequence = read_sequence(path)
    messages = {m.split(" appears")[0].removeprefix(f"{path}: field "): m for m in _repeat_warnings(record)}
    assert list(messages) == [  # in order of first appearance in the header
        "UltrasoundImageOrientation",
        "Seq_Frame0001_ProbeToTrackerTransform",
        "Seq_Frame0001_Timestamp",
        "Operator",
    ]
    assert "appears 3 times (header lines" in messages["Operator"] and "'A', then 'B', then 'C')" in messages["Operator"]
    assert "appears twice (header lines" in messages["Seq_Frame0001_Timestamp"]
    assert "'9', then '2.5'); using the last value" in messages["Seq_Frame0001_Timestamp"]
    assert sequence.image_orientation == "MF" and sequence.header["Operator"] == "C"
    assert sequence.timestamps_s.tolist() == [1.5, 2.5]
    expected = plus_matrix(SMALL_POSE)
    np.testing.assert_array_equal(sequence.transforms["ProbeToTracker"][0], expected)
    expected[0, 3] = 11.0
    np.testing.assert_array_equal(sequence.transforms["ProbeToTracker"][1], expected)
    with pytest.warns(SequenceFileWarning):
        info = describe_sequence(path)
    assert [f"{path}: {line}" for line in info["repeated_fields"]] == list(messages.values())


def test_a_frame_field_under_two_spellings_of_its_index_keeps_the_last(tmp_path):
    path = write_variant(
        tmp_path, "spelling.igs.mha", False, [(b"Seq_Frame0001_ImageStatus = OK", b"Seq_Frame1_Timestamp = 3.75")]
    )
    with pytest.warns(SequenceFileWarning, match=r"field Seq_Frame0001_Timestamp appears twice \('2.25', then '3.75'\)"):
        assert read_sequence(path).timestamps_s.tolist() == [1.5, 3.75]


def test_nrrd_repeated_fields_and_keys_keep_the_last_value(tmp_path):
    path = write_variant(
        tmp_path,
        "repeated.seq.nrrd",
        False,
        [
            (b"kinds: domain domain list\n", b"kinds: domain domain domain\nkinds: domain domain list\n"),
            (b"ultrasound image orientation:=MF\n", b"ultrasound image orientation:=UN\nUltrasoundImageOrientation:=MF\n"),
            (b"Seq_Frame0000_Timestamp:=1.5\n", b"Seq_Frame0000_Timestamp:=1.5\nSeq_Frame0000_Timestamp:=1.25\n"),
        ],
    )
    with pytest.warns(SequenceFileWarning) as record:
        sequence = read_sequence(path)
    messages = _repeat_warnings(record)
    assert [m.split(" (")[0] for m in messages] == [
        f"{path}: field kinds appears twice",
        f"{path}: field UltrasoundImageOrientation appears twice",
        f"{path}: field Seq_Frame0000_Timestamp appears twice",
    ]
    assert "'domain domain domain', then 'domain domain list'" in messages[0]
    assert sequence.image_orientation == "MF" and sequence.timestamps_s.tolist() == [1.25, 2.25]
    np.testing.assert_array_equal(sequence.images, small_sequence().images)


def test_many_repeated_fields_give_twenty_warnings_and_a_count(tmp_path):
    notes = b"".join(b"Note%d = a\nNote%d = b\n" % (i, i) for i in range(25))
    path = write_variant(tmp_path, "many.igs.mha", False, [(END, notes + END)])
    with pytest.warns(SequenceFileWarning) as record:
        sequence = read_sequence(path)
    messages = _repeat_warnings(record)
    assert len(messages) == 21 and messages[-1] == f"{path}: 5 more fields appear more than once; the last value of each is used"
    assert all(sequence.header[f"Note{i}"] == "b" for i in range(25))
    with pytest.warns(SequenceFileWarning):
        assert len(describe_sequence(path)["repeated_fields"]) == 25
