"""Property: a mutated sequence file either reads or fails with a WorkbenchError, never anything else.

Small valid files (MetaIO compressed and raw, NRRD gzip, tracking-only MetaIO and NRRD) are
mutated line by line (delete, duplicate, new value) or byte by byte (truncate, flip). Whatever
reads must also describe, and must write back and read back unchanged or be refused with a
WorkbenchError. A duplicated header line (a field given twice with the same value) always
reads, with a SequenceFileWarning, as the original.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.errors import WorkbenchError
from workbench.io.sequence import (
    SequenceFileWarning,
    TrackedSequence,
    describe_sequence,
    read_sequence,
    write_sequence,
)


def _base_sequence(images: np.ndarray | None) -> TrackedSequence:
    pose = np.array([[0.0, -1, 0, 10], [1, 0, 0, 20], [0, 0, 1, 30], [0, 0, 0, 1]])
    stylus = np.tile(pose, (3, 1, 1))
    stylus[1] = 5.0
    return TrackedSequence(
        images=images,
        timestamps_s=[215.102186, 215.2, 215.3],
        transforms={"ProbeToTracker": np.tile(pose, (3, 1, 1)), "StylusToTracker": stylus},
        transform_status={"StylusToTracker": np.array([True, False, True])},
        frame_fields={"FrameNumber": ["1", "2", "4"]},
        header={"UltrasoundImageType": "BRIGHTNESS"},
        image_orientation="MFA",
        frame_indices=[0, 1, 3],
    )


_IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
_BASES = {
    "mha-zlib": ("base.igs.mha", _IMAGES, True),
    "mha-raw": ("base.seq.mha", _IMAGES.astype(np.int16), False),
    "nrrd-gz": ("base.seq.nrrd", _IMAGES, True),
    "tracker-only": ("base.igs.mha", None, True),
    "tracker-only-nrrd": ("base.seq.nrrd", None, False),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, tuple[str, bytes]]:
    folder = tmp_path_factory.mktemp("fuzz-bases")
    files = {}
    for key, (name, images, compress) in _BASES.items():
        path = write_sequence(_base_sequence(images), folder / f"{key}-{name}", compress=compress)
        files[key] = (name, path.read_bytes())
    return files


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_VALUES = st.one_of(
    st.text(max_size=24),
    st.integers(-(10**12), 10**12).map(str),
    st.floats().map(repr),
    st.sampled_from(
        [
            "",
            "nan",
            "inf",
            "-1e999",
            "0",
            "1 1 1",
            "3 2",
            "0 0 3",
            "1 0 0 0 1 0 0 0 1",
            "OK",
            "INVALID",
            "True",
            "False",
            "LOCAL",
            "MET_FLOAT",
            "domain domain domain",
            "gz",
            "raw",
            "double",
        ]
    ),
)


def _header_end(data: bytes) -> int:
    marker = b"ElementDataFile = LOCAL\n"
    return data.index(marker) + len(marker) if marker in data else data.index(b"\n\n") + 2


@st.composite
def mutated_files(draw, bases: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    name, data = bases[draw(st.sampled_from(sorted(bases)))]
    end = _header_end(data)
    lines, pixels = data[:end].split(b"\n"), data[end:]
    kind = draw(st.sampled_from(["delete", "duplicate", "value", "insert", "truncate", "flip"]))
    line = draw(st.integers(0, len(lines) - 2))
    if kind == "delete":
        del lines[line]
    elif kind == "duplicate":
        lines.insert(line, lines[line])
    elif kind == "value":
        key, sep, _ = lines[line].partition(b":=" if b":=" in lines[line] else b"=" if b"=" in lines[line] else b":")
        lines[line] = key + sep + draw(_VALUES).encode("utf-8", "surrogatepass")
    elif kind == "insert":
        lines.insert(line, draw(st.sampled_from([b"Seq_Frame0002_Timestamp = 1", b"HeaderSize = 3", b"x", b"a:=b"])))
    mutated = b"\n".join(lines) + pixels
    if kind == "truncate":
        mutated = mutated[: draw(st.integers(0, len(mutated)))]
    elif kind == "flip":
        flipped = bytearray(mutated)
        for _ in range(draw(st.integers(1, 3))):
            position = draw(st.integers(0, len(flipped) - 1))
            flipped[position] ^= draw(st.integers(1, 255))
        mutated = bytes(flipped)
    return name, mutated


@pytest.mark.filterwarnings("ignore::workbench.io.sequence.SequenceFileWarning")
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_files_read_or_raise_workbench_errors(bases, workdir, data):
    name, content = data.draw(mutated_files(bases))
    path = workdir / name
    path.write_bytes(content)
    try:
        sequence = read_sequence(path)
    except WorkbenchError:
        return
    assert sequence.images.shape[0] == len(sequence) == len(sequence.frame_indices)
    info = describe_sequence(path)
    assert json.loads(json.dumps(info, allow_nan=False))["frames"] == len(sequence)
    copy = workdir / f"copy-{name}"
    try:
        write_sequence(sequence, copy)
    except WorkbenchError:
        return
    again = read_sequence(copy)
    np.testing.assert_array_equal(again.images, sequence.images)
    np.testing.assert_array_equal(again.timestamps_s, sequence.timestamps_s)
    for transform_name, matrices in sequence.transforms.items():
        np.testing.assert_array_equal(again.transforms[transform_name], matrices)
        np.testing.assert_array_equal(again.transform_status[transform_name], sequence.transform_status[transform_name])
    np.testing.assert_array_equal(again.image_status, sequence.image_status)
    assert again.frame_fields == sequence.frame_fields


def _same(again: TrackedSequence, original: TrackedSequence) -> None:
    np.testing.assert_array_equal(again.images, original.images)
    np.testing.assert_array_equal(again.timestamps_s, original.timestamps_s)
    assert set(again.transforms) == set(original.transforms)
    for name, matrices in original.transforms.items():
        np.testing.assert_array_equal(again.transforms[name], matrices)
        np.testing.assert_array_equal(again.transform_status[name], original.transform_status[name])
    np.testing.assert_array_equal(again.image_status, original.image_status)
    assert again.frame_fields == original.frame_fields and again.header == original.header
    assert again.image_orientation == original.image_orientation


@pytest.mark.parametrize("key", sorted(_BASES))
def test_every_duplicated_header_line_reads_as_the_original_with_a_warning(bases, workdir, key):
    name, data = bases[key]
    end = _header_end(data)
    lines, pixels = data[:end].split(b"\n"), data[end:]
    original_path = workdir / f"original-{key}-{name}"
    original_path.write_bytes(data)
    original = read_sequence(original_path)
    checked = 0
    for index, line in enumerate(lines[:-1]):
        if line.startswith((b"NRRD000", b"ElementDataFile", b"#")) or not line.strip():
            continue  # the magic, the end of a MetaIO header, comments: not fields
        duplicated = lines[: index + 1] + [line] + lines[index + 1 :]
        path = workdir / f"dup-{key}-{index}-{name}"
        path.write_bytes(b"\n".join(duplicated) + pixels)
        with pytest.warns(SequenceFileWarning, match="appears twice"):
            again = read_sequence(path)
        _same(again, original)
        checked += 1
    assert checked >= 20
