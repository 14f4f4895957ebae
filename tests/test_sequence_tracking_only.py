"""Tracking-only PLUS recordings (a stylus with a reference, no ultrasound images), as PLUS writes them.

PLUS's sequence writers (vtkPlusMetaImageSequenceIO / vtkPlusNrrdSequenceIO) write a recording
without images as ``DimSize = 0 0 N`` with ``ElementType = MET_OTHER`` (NRRD ``sizes: 0 0 N``,
``type: none``) and ``ImageStatus = INVALID`` in every frame, or ``DimSize = 1 1 N`` without
image statuses when image writing is switched off; the header fields come after ``ObjectType``
and ``NDims`` in alphabetical order, ``DimSize`` and ``CompressedDataSize`` padded with spaces.
The files below are written by hand that way; none of ``../shared/data`` is tracking-only, so
the real stylus and reference poses of ``BoneUltrasound_L14`` are also turned into one.

The recording: 4 frames. ReferenceToTracker is a translation (100, -50, -1500) mm in frames 0-1
and the same with a 90 deg turn about z in frames 2-3. StylusToTracker sits at (110, -40, -1480)
in frames 0 and 2, turned 90 deg about x at (100.5, -49.25, -1400) in frame 1, and is INVALID
(out of view; PLUS writes an identity) in frame 3. So StylusToReference is, by hand:
frame 0 a translation (10, 10, 20); frame 1 the x-turn at (0.5, 0.75, 100); frame 2 a -90 deg
turn about z at (10, -10, 20); frame 3 invalid.
"""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest

from workbench.cli import main
from workbench.errors import FrameError, ReconstructionError, SequenceFileError
from workbench.frames import Transform
from workbench.io.plus_config import VolumeReconstructionConfig
from workbench.io.sequence import (
    SequenceFileWarning,
    TrackedSequence,
    describe_sequence,
    pose_series,
    read_sequence,
    write_sequence,
)

REFERENCE = [
    "1 0 0 100 0 1 0 -50 0 0 1 -1500 0 0 0 1",
    "1 0 0 100 0 1 0 -50 0 0 1 -1500 0 0 0 1",
    "0 -1 0 100 1 0 0 -50 0 0 1 -1500 0 0 0 1",
    "0 -1 0 100 1 0 0 -50 0 0 1 -1500 0 0 0 1",
]
STYLUS = [
    "1 0 0 110 0 1 0 -40 0 0 1 -1480 0 0 0 1",
    "1 0 0 100.5 0 0 -1 -49.25 0 1 0 -1400 0 0 0 1",
    "1 0 0 110 0 1 0 -40 0 0 1 -1480 0 0 0 1",
    "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
]
STYLUS_STATUS = ["OK", "OK", "OK", "INVALID"]
TIMESTAMPS = ["12.345678", "12.395678", "12.445678", "12.495678"]
UNFILTERED = ["12.3401", "12.3972", "12.4466", "12.4949"]

#: StylusToReference per frame, worked out by hand (see the module docstring).
STYLUS_TO_REFERENCE = [
    [[1, 0, 0, 10], [0, 1, 0, 10], [0, 0, 1, 20], [0, 0, 0, 1]],
    [[1, 0, 0, 0.5], [0, 0, -1, 0.75], [0, 1, 0, 100], [0, 0, 0, 1]],
    [[0, 1, 0, 10], [-1, 0, 0, -10], [0, 0, 1, 20], [0, 0, 0, 1]],
]

#: The empty zlib stream PLUS's compressor writes when there are no pixels.
EMPTY_ZLIB = zlib.compress(b"")


def matrix(text: str) -> np.ndarray:
    return np.array(text.split(), dtype=float).reshape(4, 4)


def _metaio_frames(image_status: bool, stylus: list[str] = STYLUS, status: list[str] = STYLUS_STATUS) -> str:
    lines = []
    for i in range(4):
        frame = f"Seq_Frame{i:04d}_"
        lines += [
            f"{frame}FrameNumber = {17 + i}",
            f"{frame}ReferenceToTrackerTransform = {REFERENCE[i]}",
            f"{frame}ReferenceToTrackerTransformStatus = OK",
            f"{frame}StylusToTrackerTransform = {stylus[i]}",
            f"{frame}StylusToTrackerTransformStatus = {status[i]}",
            f"{frame}Timestamp = {TIMESTAMPS[i]}",
            f"{frame}UnfilteredTimestamp = {UNFILTERED[i]}",
        ]
        if image_status:
            lines.append(f"{frame}ImageStatus = INVALID")
    return "\n".join(lines) + "\n"


def plus_metaio(*, compressed: bool = False, images_off: bool = False, data_file: str = "LOCAL", **frames) -> bytes:
    """A stylus recording as vtkPlusMetaImageSequenceIO writes it, Kinds given twice."""
    compression = (
        f"CompressedData = True\nCompressedDataSize = {len(EMPTY_ZLIB)}{' ' * 17}\n"
        if compressed
        else "CompressedData = False\n"
    )
    if images_off:  # EnableImageDataWrite off: 1 1 N, no channels, no image type, no image status
        layout = "DimSize = 1 1 4                      \nElementSpacing = 1 1 1\nElementType = MET_OTHER\n"
        image_type = ""
    else:
        layout = (
            "DimSize = 0 0 4                      \nElementNumberOfChannels = 1\nElementSpacing = 1 1 1\n"
            "ElementType = MET_OTHER\n"
        )
        image_type = "UltrasoundImageType = BRIGHTNESS\n"
    header = (
        "ObjectType = Image\nNDims = 3\nAnatomicalOrientation = RAI\nBinaryData = True\n"
        f"BinaryDataByteOrderMSB = False\nCenterOfRotation = 0 0 0\n{compression}{layout}"
        "Kinds = domain domain list\nOffset = 0 0 0\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"UltrasoundImageOrientation = MF\n{image_type}Kinds = domain domain list\n"
        + _metaio_frames(not images_off, **frames)
        + f"ElementDataFile = {data_file}\n"
    )
    return header.encode() + (EMPTY_ZLIB if compressed and data_file == "LOCAL" else b"")


def plus_nrrd() -> bytes:
    """The same recording as vtkPlusNrrdSequenceIO writes it."""
    frames = _metaio_frames(True).replace(" = ", ":=").replace("_ImageStatus:=", "_Status:=")
    return (
        "NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n"
        "# File generated by PLUS version 2.9.0\ndimension: 3\nencoding: raw\nendian: little\n"
        "kinds: domain domain               list\nsizes: 0 0                             4\n"
        "space dimension: 2\nspace directions: (1,0) (0,1) none\nspace origin: (0,0)\ntype: none\n"
        "ultrasound image orientation:=MF\nultrasound image type:=BRIGHTNESS\n" + frames + "\n"
    ).encode()


VARIANTS = {
    "mha-raw": ("stylus.igs.mha", lambda: plus_metaio()),
    "mha-zlib": ("stylus.igs.mha", lambda: plus_metaio(compressed=True)),
    "mha-images-off": ("stylus.seq.mha", lambda: plus_metaio(images_off=True)),
    "mhd": ("stylus.mhd", lambda: plus_metaio(compressed=True, data_file="stylus.zraw")),
    "nrrd": ("stylus.seq.nrrd", plus_nrrd),
}


def _write(tmp_path, variant: str):
    name, make = VARIANTS[variant]
    path = tmp_path / name
    path.write_bytes(make())
    if variant == "mhd":
        (tmp_path / "stylus.zraw").write_bytes(EMPTY_ZLIB)
    return path


def _read(path):
    """Read, expecting the repeated Kinds warning from the MetaIO variants (and no other warning)."""
    if path.suffix == ".nrrd":
        return read_sequence(path)
    lines = path.read_bytes().decode("latin-1").split("\n")
    first, second = (number for number, line in enumerate(lines, start=1) if line.startswith("Kinds"))
    with pytest.warns(SequenceFileWarning) as record:
        sequence = read_sequence(path)
    assert [str(w.message) for w in record] == [
        f"{path}: field Kinds appears twice (header lines {first} and {second}: 'domain domain list', then "
        "'domain domain list'); using the last value, as PLUS does"
    ]
    return sequence


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_plus_stylus_recording_reads_with_every_number(tmp_path, variant):
    path = _write(tmp_path, variant)
    sequence = _read(path)
    assert len(sequence) == 4 and not sequence.has_images
    assert sequence.images.shape == (4, 0, 0) and sequence.image_size_px == (0, 0)
    assert sequence.image_status.tolist() == [False] * 4
    assert sequence.timestamps_s.tolist() == [12.345678, 12.395678, 12.445678, 12.495678]
    assert sequence.frame_indices.tolist() == [0, 1, 2, 3]
    assert list(sequence.transforms) == ["ReferenceToTracker", "StylusToTracker"]
    for i in range(4):
        np.testing.assert_array_equal(sequence.transforms["ReferenceToTracker"][i], matrix(REFERENCE[i]))
        np.testing.assert_array_equal(sequence.transforms["StylusToTracker"][i], matrix(STYLUS[i]))
    assert sequence.transform_status["StylusToTracker"].tolist() == [True, True, True, False]
    assert sequence.transform_status["ReferenceToTracker"].tolist() == [True] * 4
    assert sequence.frame_fields == {"FrameNumber": ["17", "18", "19", "20"], "UnfilteredTimestamp": UNFILTERED}
    assert sequence.image_orientation == "MF"
    expected_header = {"AnatomicalOrientation": "RAI", "CenterOfRotation": "0 0 0", "ElementSpacing": "1 1 1"}
    expected_header |= {"Offset": "0 0 0", "TransformMatrix": "1 0 0 0 1 0 0 0 1"}
    if variant == "nrrd":
        expected_header = {}
    if variant != "mha-images-off":
        expected_header["UltrasoundImageType"] = "BRIGHTNESS"
    assert sequence.header == expected_header


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_describe_shows_a_tracking_only_sequence_and_its_transforms(tmp_path, variant):
    path = _write(tmp_path, variant)
    if variant == "nrrd":
        info = describe_sequence(path)
    else:
        with pytest.warns(SequenceFileWarning, match="field Kinds appears twice"):
            info = describe_sequence(path)
    assert json.loads(json.dumps(info, allow_nan=False)) == info
    assert info["kind"] == "sequence" and info["frames"] == 4 and info["tracking_only"] is True
    assert info["image_size_px"] == [0, 0] and info["channels"] is None and info["pixel_type"] is None
    assert info["transforms"] == {
        "ReferenceToTracker": {"ok": 4, "invalid": 0},
        "StylusToTracker": {"ok": 3, "invalid": 1},
    }
    assert info["image_status"] == {"ok": 0, "invalid": 4}
    assert info["timestamp_range_s"] == [12.345678, 12.495678]
    assert info["compressed"] is (variant in ("mha-zlib", "mhd"))
    repeated = [] if variant == "nrrd" else ["Kinds"]
    assert [line.split()[1] for line in info["repeated_fields"]] == repeated


def test_workbench_info_prints_it_as_tracking_only(tmp_path, capsys):
    path = _write(tmp_path, "mha-zlib")
    with pytest.warns(SequenceFileWarning):
        code = main(["info", str(path)])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tracking_only"] is True and info["transforms"]["StylusToTracker"] == {"ok": 3, "invalid": 1}


def test_pose_series_composes_the_stylus_in_the_reference_frame(tmp_path):
    sequence = read_sequence(_write(tmp_path, "nrrd"))
    matrices, valid = pose_series(sequence, "StylusToReference")
    assert matrices.shape == (4, 4, 4) and valid.tolist() == [True, True, True, False]
    for i, expected in enumerate(STYLUS_TO_REFERENCE):
        np.testing.assert_allclose(matrices[i], expected, rtol=0, atol=1e-12)
    assert np.isnan(matrices[3]).all()  # INVALID: never a number to use by mistake
    inverse, inverse_valid = pose_series(sequence, "ReferenceToStylus")
    np.testing.assert_allclose(inverse[0], np.linalg.inv(np.array(STYLUS_TO_REFERENCE[0])), atol=1e-12)
    assert inverse_valid.tolist() == [True, True, True, False]
    stored, stored_valid = pose_series(sequence, "StylusToTracker")
    np.testing.assert_array_equal(stored[:3], sequence.transforms["StylusToTracker"][:3])
    assert stored_valid.tolist() == [True, True, True, False]
    tracker_to_reference, _ = pose_series(sequence, "TrackerToReference")
    np.testing.assert_array_equal(tracker_to_reference[0], matrix("1 0 0 -100 0 1 0 50 0 0 1 1500 0 0 0 1"))
    same, same_valid = pose_series(sequence, "StylusToStylus")
    np.testing.assert_array_equal(same, np.tile(np.eye(4), (4, 1, 1)))
    assert same_valid.all()


def test_pose_series_names_what_it_cannot_compute(tmp_path):
    sequence = read_sequence(_write(tmp_path, "nrrd"))
    path = tmp_path / "stylus.seq.nrrd"
    with pytest.raises(FrameError) as caught:
        pose_series(sequence, "NeedleToReference")
    assert str(caught.value) == (
        f"{path}: cannot compute NeedleToReference: the sequence's transforms (ReferenceToTracker, "
        "StylusToTracker) do not connect 'Needle' to 'Reference'"
    )
    with pytest.raises(FrameError, match="Stylus"):
        pose_series(sequence, "Stylus")


def test_a_nan_pose_is_refused_when_ok_and_kept_when_invalid(tmp_path):
    nan_pose = "nan nan nan nan nan nan nan nan nan nan nan nan 0 0 0 1"
    ok_nan = tmp_path / "ok-nan.igs.mha"
    ok_nan.write_bytes(plus_metaio(stylus=[*STYLUS[:2], nan_pose, STYLUS[3]]))
    with pytest.raises(SequenceFileError) as caught:
        read_sequence(ok_nan)
    assert caught.value.problem == (
        "Seq_Frame0002_StylusToTrackerTransform: NaN or infinity in a transform whose status is OK"
    )
    invalid_nan = tmp_path / "invalid-nan.igs.mha"
    invalid_nan.write_bytes(plus_metaio(stylus=[*STYLUS[:3], nan_pose.replace("nan", "inf", 3)]))
    with pytest.warns(SequenceFileWarning):
        sequence = read_sequence(invalid_nan)
    assert sequence.transform_status["StylusToTracker"].tolist() == [True, True, True, False]
    assert np.isinf(sequence.transforms["StylusToTracker"][3, 0, :3]).all()
    matrices, valid = pose_series(sequence, "StylusToReference")
    assert valid.tolist() == [True, True, True, False] and np.isnan(matrices[3]).all()


# -- everything that needs images says so -------------------------------------------------------


def test_steps_that_need_images_name_the_file_and_the_reason(tmp_path):
    path = _write(tmp_path, "nrrd")
    sequence = read_sequence(path)
    expected = (
        f"{path}: tracking-only sequence: no images (an MF-oriented image needs ultrasound frames; this "
        "recording holds 4 frames of transforms only: ReferenceToTracker, StylusToTracker)"
    )
    with pytest.raises(SequenceFileError) as caught:
        sequence.images_mf()
    assert str(caught.value) == expected
    with pytest.raises(SequenceFileError, match=r"no images \(bone detection needs ultrasound frames"):
        sequence.require_images("bone detection")

    from workbench.reconstruction.reconstruct import reconstruct_volume

    image_to_probe = Transform(np.diag([0.1, 0.1, 0.1, 1.0]), "Image", "Probe")
    with pytest.raises(ReconstructionError) as caught:
        reconstruct_volume(sequence, image_to_probe, VolumeReconstructionConfig(output_spacing_mm=(1.0, 1.0, 1.0)))
    assert caught.value.path == str(path) and caught.value.problem.startswith("tracking-only sequence: no images")

    from workbench.registration.surface import us_bone_points

    with pytest.raises(SequenceFileError) as caught:
        us_bone_points(sequence, image_to_probe)
    assert caught.value.path == str(path) and caught.value.problem.startswith("tracking-only sequence: no images")


# -- writing one back ----------------------------------------------------------------------------

WRITERS = [("out.igs.mha", True), ("out.seq.mha", False), ("out.mhd", True), ("out.seq.nrrd", True), ("out.nrrd", False)]


@pytest.mark.parametrize(("name", "compress"), WRITERS, ids=[f"{n}-{c}" for n, c in WRITERS])
def test_writing_a_stylus_recording_back_round_trips(tmp_path, name, compress):
    original = read_sequence(_write(tmp_path, "nrrd"))
    again = read_sequence(write_sequence(original, tmp_path / name, compress=compress))
    assert not again.has_images and again.images.shape == (4, 0, 0)
    np.testing.assert_array_equal(again.timestamps_s, original.timestamps_s)
    for transform in original.transforms:
        np.testing.assert_array_equal(again.transforms[transform], original.transforms[transform])
        np.testing.assert_array_equal(again.transform_status[transform], original.transform_status[transform])
    np.testing.assert_array_equal(again.image_status, [False] * 4)
    assert again.frame_fields == original.frame_fields and again.image_orientation == "MF"


def test_written_metaio_header_is_the_one_plus_writes(tmp_path):
    sequence = read_sequence(_write(tmp_path, "nrrd"))
    raw = write_sequence(sequence, tmp_path / "raw.igs.mha", compress=False).read_bytes()
    assert raw.endswith(b"ElementDataFile = LOCAL\n")  # no pixel bytes at all
    lines = raw.decode().splitlines()
    for line in ("DimSize = 0 0 4", "ElementType = MET_OTHER", "ElementNumberOfChannels = 1", "Kinds = domain domain list"):
        assert line in lines
    assert lines.count("Kinds = domain domain list") == 1
    assert [line for line in lines if line.startswith("Seq_Frame0003_")] == [
        "Seq_Frame0003_FrameNumber = 20",
        "Seq_Frame0003_ReferenceToTrackerTransform = 0 -1 0 100 1 0 0 -50 0 0 1 -1500 0 0 0 1",
        "Seq_Frame0003_ReferenceToTrackerTransformStatus = OK",
        "Seq_Frame0003_StylusToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
        "Seq_Frame0003_StylusToTrackerTransformStatus = INVALID",
        "Seq_Frame0003_Timestamp = 12.495678",
        "Seq_Frame0003_UnfilteredTimestamp = 12.4949",
        "Seq_Frame0003_ImageStatus = INVALID",
    ]
    zipped = write_sequence(sequence, tmp_path / "zipped.igs.mha", compress=True).read_bytes()
    assert b"CompressedDataSize = 8\n" in zipped and zipped.endswith(b"ElementDataFile = LOCAL\n" + EMPTY_ZLIB)


def test_written_nrrd_header_is_the_one_plus_writes(tmp_path):
    sequence = read_sequence(_write(tmp_path, "nrrd"))
    data = write_sequence(sequence, tmp_path / "out.seq.nrrd", compress=False).read_bytes()
    assert data.endswith(b"Seq_Frame0003_Status:=INVALID\n\n")
    lines = data.decode().splitlines()
    for line in ("sizes: 0 0 4", "type: none", "kinds: domain domain list", "encoding: raw"):
        assert line in lines


def test_writer_refuses_a_tracking_only_sequence_it_could_not_read_back(tmp_path):
    sequence = TrackedSequence(images=None, timestamps_s=[1.0, 2.0], image_status=np.array([False, True]))
    with pytest.raises(SequenceFileError, match=re.escape("image_status is OK in frame 1 but the sequence has no images")):
        write_sequence(sequence, tmp_path / "out.igs.mha")
    hollow = TrackedSequence(images=np.zeros((2, 5, 0), np.uint8), timestamps_s=[1.0, 2.0])
    assert not hollow.has_images
    with pytest.raises(SequenceFileError, match=re.escape("images of shape (2, 5, 0) hold no pixels")):
        write_sequence(hollow, tmp_path / "out.igs.mha")
    assert list(tmp_path.iterdir()) == []


# -- real poses from ../shared/data --------------------------------------------------------------

BONE = "plus-spine-bone-L14/BoneUltrasound_L14.igs.mha"


def test_real_sweeps_are_not_tracking_only(shared_data):
    for name in (BONE, "plus-nwire-freehand/NwirePhantomFreehand.igs.nrrd"):
        info = describe_sequence(shared_data / name)
        assert info["tracking_only"] is False and info["repeated_fields"] == []
        assert info["pixel_type"] == "uint8" and info["image_size_px"] == [820, 616]


def test_real_stylus_poses_as_a_tracking_only_recording(shared_data, tmp_path):
    """BoneUltrasound_L14's own stylus and reference poses, written without images and read back."""
    sweep = read_sequence(shared_data / BONE)
    assert sweep.has_images and sweep.transform_status["StylusToTracker"].all()
    recording = TrackedSequence(
        images=None,
        timestamps_s=sweep.timestamps_s,
        transforms={name: sweep.transforms[name] for name in ("StylusToTracker", "ReferenceToTracker")},
        frame_indices=sweep.frame_indices,
    )
    again = read_sequence(write_sequence(recording, tmp_path / "stylus.igs.mha"))
    assert not again.has_images and len(again) == 21
    # frame 0 as printed in the file's own header
    header = (shared_data / BONE).read_bytes()[:4000].decode("latin-1")
    stylus_text = re.search(r"Seq_Frame0000_StylusToTrackerTransform = ([^\n]+)", header).group(1)
    np.testing.assert_array_equal(again.transforms["StylusToTracker"][0], matrix(stylus_text))
    np.testing.assert_array_equal(again.transforms["StylusToTracker"][0, :, 3], [256.332, 368.738, 35.5851, 1.0])
    np.testing.assert_array_equal(again.transforms["ReferenceToTracker"], sweep.transforms["ReferenceToTracker"])
    assert again.timestamps_s[0] == 232.542071
    matrices, valid = pose_series(again, "StylusToReference")
    assert valid.all()
    for i in (0, 10, 20):
        expected = np.linalg.inv(sweep.transforms["ReferenceToTracker"][i]) @ sweep.transforms["StylusToTracker"][i]
        np.testing.assert_array_equal(matrices[i], expected)
        np.testing.assert_allclose(matrices[i], sweep.repository(i).get("StylusToReference").matrix, atol=1e-3)
