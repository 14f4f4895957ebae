"""Every file stays in its folder: the containment rule (workbench.io.paths) and each traversal of issue 14.

- a sweep inside a case bundle whose ``ElementDataFile`` is absolute or holds ``../``;
- a volume header (``.mhd``, ``.nhdr``) whose data file is outside its folder;
- ``add_file`` through a ``sweeps/`` folder that is a symbolic link;
- symbolic links (and FIFOs) inside attachment folders;
- digests that cover a header's detached data file, and older header-only digests;
- FIFOs refused by every reader, and ``workbench info`` on a FIFO exits 2 at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from workbench.case import Attachment, Case, MriRef, SweepRef, add_file, load_case, path_sha256, save_case
from workbench.case.storage import HeaderOnlyDigestWarning, file_sha256
from workbench.errors import CaseBundleError, DeviceSetError, DicomError, SequenceFileError, VolumeError, WorkbenchError
from workbench.frames import Transform
from workbench.io.paths import (
    contained,
    data_file_beside,
    detached_data_file,
    regular_files_below,
    require_regular_file,
)
from workbench.io.sequence import TrackedSequence, read_sequence, write_sequence
from workbench.io.volume import describe_volume, load_volume

IMAGE_TO_PROBE = np.array([[0.0, 0.08, 0.0, 11.0], [-0.08, 0.0, 0.0, 50.0], [0.0, 0.0, 0.08, 0.0], [0.0, 0.0, 0.0, 1.0]])
PIXELS = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@contextlib.contextmanager
def no_hang(seconds: int = 10):
    """Fail instead of hanging: SIGALRM interrupts a blocked open() of a FIFO."""

    def alarm(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s (a FIFO was opened?)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sequence() -> TrackedSequence:
    poses = np.tile(np.eye(4), (2, 1, 1))
    poses[:, :3, 3] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    return TrackedSequence(images=PIXELS, timestamps_s=[0.0, 0.1], transforms={"ProbeToTracker": poses})


def _detached_sweep(folder: Path, name: str, reference: str | None) -> tuple[Path, Path]:
    """A MetaIO sweep header ``folder/name`` and its raw data; the header names ``reference`` (default: beside)."""
    staging = folder / ".staging"
    header = write_sequence(_sequence(), staging / "sweep.mhd", compress=False)
    text = header.read_text()
    data = staging / "sweep.raw"
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if reference is None:
        reference = f"{Path(name).name}.raw"
        data.rename(target.parent / reference)
    target.write_text(text.replace("ElementDataFile = sweep.raw", f"ElementDataFile = {reference}"))
    header.unlink()
    staging.rmdir() if not any(staging.iterdir()) else None
    return target, data


def _case_with_sweep(folder: Path, sweep_relative: str, sweep_sha256: str, **more) -> Case:
    return Case(
        case_id="PVB-101",
        title="containment",
        created_utc="2024-05-01T09:30:00Z",
        modified_utc="2024-05-01T09:30:00Z",
        sweeps=[SweepRef(sweep_relative, sweep_sha256, Transform(IMAGE_TO_PROBE, "Image", "Probe"))],
        **more,
    )


def _write_case_json(folder: Path, case: Case) -> None:
    """case.json as an attacker (or an older workbench) writes it: no checks."""
    (folder / "case.json").write_text(json.dumps(case.to_dict()))


# -- the rule itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relative, problem",
    [
        ("/etc/passwd", "'/etc/passwd' is absolute; it must be relative to its folder"),
        ("C:/scans/x.raw", "'C:/scans/x.raw' is absolute; it must be relative to its folder"),
        ("../x.raw", "'../x.raw' contains '..'; files must stay inside their folder"),
        ("a/../../x.raw", "'a/../../x.raw' contains '..'; files must stay inside their folder"),
        ("a\\x.raw", "'a\\\\x.raw' contains '\\'; paths use '/'"),
        ("", "'' is empty"),
        (".", "'.' names the folder itself, not a file in it"),
        ("a\x00b", "'a\\x00b' contains a NUL byte"),
    ],
)
def test_contained_refuses_every_lexical_escape(tmp_path, relative, problem):
    with pytest.raises(WorkbenchError) as caught:
        contained(tmp_path, relative)
    assert caught.value.problem == problem


def test_contained_returns_the_file_under_the_resolved_folder(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "f.raw").write_bytes(b"x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")  # the folder itself may be reached through a link
    assert contained(tmp_path / "alias", "sub/f.raw") == (tmp_path / "real" / "sub" / "f.raw").resolve()
    assert contained(tmp_path / "real", "./sub/f.raw") == (tmp_path / "real" / "sub" / "f.raw").resolve()
    assert contained(tmp_path / "real", "sub/new/g.raw", must_exist=False) == (tmp_path / "real/sub/new/g.raw").resolve()


def test_contained_refuses_links_below_the_folder_wherever_they_point(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.raw").write_bytes(b"x")
    (root / "inside.raw").symlink_to("sub/f.raw")
    (root / "linked").symlink_to(root / "sub")
    with pytest.raises(WorkbenchError, match="'inside.raw' is a symbolic link; links are refused"):
        contained(root, "inside.raw")
    with pytest.raises(WorkbenchError, match="'linked/f.raw': linked is a symbolic link; links are refused"):
        contained(root, "linked/f.raw")
    with pytest.raises(WorkbenchError, match="'linked/new.raw': linked is a symbolic link"):
        contained(root, "linked/new.raw", must_exist=False)  # never written through a link either
    with pytest.raises(WorkbenchError, match="'sub/f.raw/x': sub/f.raw is not a folder"):
        contained(root, "sub/f.raw/x")
    with pytest.raises(WorkbenchError, match="'sub' is a folder, not a file"):
        contained(root, "sub")
    assert contained(root, "sub", allow_folder=True) == (root / "sub").resolve()
    with pytest.raises(WorkbenchError, match=r"'sub/missing.raw' not found in "):
        contained(root, "sub/missing.raw")


def test_contained_and_require_regular_file_refuse_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.raw")
    with no_hang():
        with pytest.raises(WorkbenchError, match=r"'pipe.raw' is a FIFO \(named pipe\), not a regular file; refused"):
            contained(tmp_path, "pipe.raw")
        with pytest.raises(VolumeError) as caught:
            require_regular_file(tmp_path / "pipe.raw", VolumeError)
    assert caught.value.problem == "is a FIFO (named pipe), not a regular file; refused (reading it could block)"
    assert caught.value.path == str(tmp_path / "pipe.raw")
    with pytest.raises(WorkbenchError, match="is a character device, not a regular file"):
        require_regular_file("/dev/null")


def test_regular_files_below_lists_real_files_and_refuses_links_and_fifos(tmp_path):
    folder = tmp_path / "att"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"a")
    (folder / "b" / "c.txt").write_bytes(b"c")
    assert regular_files_below(folder) == [folder / "a.txt", folder / "b" / "c.txt"]
    (folder / "b" / "link.txt").symlink_to(folder / "a.txt")
    with pytest.raises(CaseBundleError, match="b/link.txt is a symbolic link; links are refused"):
        regular_files_below(folder, error=CaseBundleError)
    (folder / "b" / "link.txt").unlink()
    (folder / "dirlink").symlink_to(tmp_path)
    with pytest.raises(WorkbenchError, match="dirlink is a symbolic link"):
        regular_files_below(folder)
    (folder / "dirlink").unlink()
    os.mkfifo(folder / "b" / "pipe")
    with pytest.raises(WorkbenchError, match=r"b/pipe is a FIFO \(named pipe\), not a regular file; refused"):
        regular_files_below(folder)


@pytest.mark.parametrize("reference", ["/tmp/x.raw", "../x.raw", "sub/x.raw", "..", "a\\x.raw"])
def test_a_data_file_must_be_a_bare_name_beside_its_header(tmp_path, reference):
    header = tmp_path / "v.mhd"
    with pytest.raises(SequenceFileError) as caught:
        data_file_beside(header, reference, error=SequenceFileError, field="ElementDataFile")
    assert caught.value.path == str(header)
    assert caught.value.problem == (
        f"ElementDataFile = {reference!r} points outside the header's folder; a detached data file must sit "
        "beside its header (a bare file name)"
    )


@pytest.mark.parametrize("shift", [-30, -12, -2, -1, 0, 1, 7])
def test_a_data_file_reference_is_found_across_the_header_read_chunks(tmp_path, shift):
    """The header is read in 64 KiB chunks; the line or blank line ending it may straddle a boundary."""
    (tmp_path / "v.raw").write_bytes(b"\0" * 8)
    boundary = 1 << 16  # paths._HEADER_CHUNK_BYTES
    head = "ObjectType = Image\nNDims = 3\nComment = "
    line_start = boundary + shift - 10  # "ElementDataFile = v.raw\n" starts here
    metaio = head + "c" * (line_start - len(head) - 1) + "\nElementDataFile = v.raw\n"
    assert metaio.index("ElementDataFile") == line_start
    (tmp_path / "v.mha").write_bytes(metaio.encode() + b"\0\1binary")
    assert detached_data_file(tmp_path / "v.mha") == (tmp_path / "v.raw").resolve()
    head = "NRRD0004\ntype: uint8\ndata file: v.raw\n# "
    nrrd = head + "c" * (boundary + shift - 1 - len(head)) + "\n\n"  # the blank line's first "\n" at boundary + shift - 1
    assert nrrd.index("\n\n") == boundary + shift - 1
    (tmp_path / "v.nrrd").write_bytes(nrrd.encode() + b"\0binary")
    assert detached_data_file(tmp_path / "v.nrrd") == (tmp_path / "v.raw").resolve()


# -- sweeps: ElementDataFile outside the bundle ------------------------------------------------------


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_sweep_in_a_bundle_with_a_data_file_outside_is_refused_before_reading(tmp_path, kind):
    bundle = tmp_path / "case"
    outside = tmp_path / "outside.raw"
    reference = str(outside) if kind == "absolute" else "../../outside.raw"
    header, data = _detached_sweep(bundle, "sweeps/s.igs.mha", reference)
    data.rename(outside)  # the pixels sit outside the bundle, as the attack has it
    # the digest recorded is the header's alone, which is what made load_case accept it before
    _write_case_json(bundle, _case_with_sweep(bundle, "sweeps/s.igs.mha", file_sha256(header)))
    for verify in (True, False):
        with pytest.raises(CaseBundleError) as caught:
            load_case(bundle, verify_digests=verify)
        assert caught.value.path == str(header)
        assert caught.value.problem.startswith(f"ElementDataFile = {reference!r} points outside the header's folder")
    with pytest.raises(SequenceFileError) as caught:
        read_sequence(header)
    assert caught.value.problem.startswith(f"ElementDataFile = {reference!r} points outside the header's folder")
    # nothing outside was read: replacing it with a FIFO does not block the reader
    outside.unlink()
    os.mkfifo(outside)
    with no_hang(), pytest.raises(SequenceFileError, match="points outside"):
        read_sequence(header)


def test_sweep_with_its_data_file_beside_it_loads_and_its_digest_covers_the_pixels(tmp_path):
    bundle = tmp_path / "case"
    header, _ = _detached_sweep(bundle, "sweeps/s.igs.mha", None)
    raw = bundle / "sweeps" / "s.igs.mha.raw"
    digest = path_sha256(header)
    expected = hashlib.sha256(
        f"s.igs.mha\t{_sha(header.read_bytes())}\ns.igs.mha.raw\t{_sha(raw.read_bytes())}\n".encode()
    ).hexdigest()
    assert digest == expected != file_sha256(header)
    _write_case_json(bundle, _case_with_sweep(bundle, "sweeps/s.igs.mha", digest))
    assert load_case(bundle).sweeps[0].sha256 == digest
    np.testing.assert_array_equal(read_sequence(header).images, PIXELS)
    # one changed voxel in the data file is caught
    raw.write_bytes(bytes([255]) + raw.read_bytes()[1:])
    with pytest.raises(CaseBundleError, match=r"sweeps\[0\].path 'sweeps/s.igs.mha' has SHA-256 .* the file changed"):
        load_case(bundle)


def test_a_header_only_digest_of_an_older_bundle_still_loads_with_a_warning(tmp_path):
    bundle = tmp_path / "case"
    header, _ = _detached_sweep(bundle, "sweeps/s.igs.mha", None)
    _write_case_json(bundle, _case_with_sweep(bundle, "sweeps/s.igs.mha", file_sha256(header)))
    with pytest.warns(HeaderOnlyDigestWarning, match="records the SHA-256 of its header only; its data file s.igs.mha.raw"):
        case = load_case(bundle)
    assert case.sweeps[0].sha256 == file_sha256(header)  # nothing migrated behind the user's back
    header.write_text(header.read_text().replace("0.1", "0.2"))  # the header itself is still verified
    with pytest.raises(CaseBundleError, match="the file changed after it was added"):
        load_case(bundle)


def test_a_symlinked_data_file_beside_the_header_is_refused(tmp_path):
    bundle = tmp_path / "case"
    header, data = _detached_sweep(bundle, "sweeps/s.igs.mha", "s.raw")
    (bundle / "sweeps" / "s.raw").symlink_to(data)
    with pytest.raises(SequenceFileError, match="ElementDataFile = 's.raw' is a symbolic link; links are refused"):
        read_sequence(header)
    with pytest.raises(CaseBundleError, match="ElementDataFile = 's.raw' is a symbolic link"):
        path_sha256(header)


# -- volumes: SimpleITK never gets a header pointing outside ---------------------------------------


def _mhd_volume(folder: Path) -> tuple[Path, Path]:
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    image.SetSpacing((0.5, 0.75, 2.0))
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / "t2.mhd"), useCompression=False)
    return folder / "t2.mhd", folder / "t2.raw"


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_mhd_volume_with_its_data_file_outside_is_refused(tmp_path, kind):
    header, data = _mhd_volume(tmp_path / "case" / "mri")
    outside = tmp_path / "secret.raw"
    data.rename(outside)
    reference = str(outside) if kind == "absolute" else "../../secret.raw"
    header.write_text(header.read_text().replace("ElementDataFile = t2.raw", f"ElementDataFile = {reference}"))
    for read in (load_volume, describe_volume):
        with pytest.raises(VolumeError) as caught:
            read(header)
        assert caught.value.path == str(header)
        assert caught.value.problem.startswith(f"ElementDataFile = {reference!r} points outside the header's folder")


def test_mhd_volume_with_its_data_file_beside_it_reads_exactly(tmp_path):
    header, _ = _mhd_volume(tmp_path / "mri")
    volume = load_volume(header)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), np.arange(24).reshape(2, 3, 4))
    assert volume.image.GetSpacing() == (0.5, 0.75, 2.0)


def _nhdr(folder: Path, data_line: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / "labels.nhdr"
    header.write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
        "space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nencoding: raw\n"
        f"{data_line}\n"
    )
    return header


@pytest.mark.parametrize("data_line", ["data file: ../outside.raw", "datafile: /etc/hostname", "data file: LIST"])
def test_nhdr_volume_with_its_data_file_outside_or_a_list_is_refused(tmp_path, data_line):
    (tmp_path / "outside.raw").write_bytes(bytes(range(8)))
    header = _nhdr(tmp_path / "case", data_line)
    with pytest.raises(VolumeError) as caught:
        load_volume(header)
    assert caught.value.path == str(header)
    reference = data_line.split(":", 1)[1].strip()
    expected = (
        "lists and file patterns are refused"
        if reference == "LIST"
        else "points outside the header's folder; a detached data file must sit beside its header"
    )
    assert caught.value.problem.startswith("data file = ") and expected in caught.value.problem


def test_nhdr_volume_with_its_data_file_beside_it_reads_and_is_digested_with_it(tmp_path):
    header = _nhdr(tmp_path / "case", "data file: labels.raw")
    (tmp_path / "case" / "labels.raw").write_bytes(bytes(range(8)))
    assert detached_data_file(header) == (tmp_path / "case" / "labels.raw").resolve()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(load_volume(header).image).ravel(), np.arange(8))
    assert path_sha256(header) == hashlib.sha256(
        f"labels.nhdr\t{_sha(header.read_bytes())}\nlabels.raw\t{_sha(bytes(range(8)))}\n".encode()
    ).hexdigest()


def test_attached_headers_are_digested_as_their_bytes(tmp_path):
    path = write_sequence(_sequence(), tmp_path / "s.igs.mha")
    assert detached_data_file(path) is None
    assert path_sha256(path) == _sha(path.read_bytes())


def test_mri_in_a_bundle_with_a_data_file_outside_is_refused(tmp_path):
    bundle = tmp_path / "case"
    header = _nhdr(bundle / "mri", "data file: ../../outside.raw")
    (tmp_path / "outside.raw").write_bytes(bytes(range(8)))
    sweep = write_sequence(_sequence(), bundle / "sweeps" / "s.igs.mha")
    case = _case_with_sweep(bundle, "sweeps/s.igs.mha", path_sha256(sweep), mri=MriRef("mri/labels.nhdr", file_sha256(header), "MR"))
    _write_case_json(bundle, case)
    with pytest.raises(CaseBundleError) as caught:
        load_case(bundle, verify_digests=False)
    assert caught.value.path == str(header)
    assert caught.value.problem.startswith("data file = '../../outside.raw' points outside the header's folder")


# -- add_file and attachments ---------------------------------------------------------------------


def test_add_file_never_writes_through_a_symlinked_sweeps_folder(tmp_path):
    bundle, elsewhere = tmp_path / "case", tmp_path / "elsewhere"
    bundle.mkdir()
    elsewhere.mkdir()
    (bundle / "sweeps").symlink_to(elsewhere)
    source = write_sequence(_sequence(), tmp_path / "in" / "s.igs.mha")
    with pytest.raises(CaseBundleError) as caught:
        add_file(bundle, source, "sweep")
    assert caught.value.problem == (
        "sweeps/s.igs.mha: sweeps is a symbolic link; links are refused, files must be real files inside their folder"
    )
    assert list(elsewhere.iterdir()) == []  # nothing written


def test_add_file_refuses_a_symlink_in_place_of_an_existing_file_and_a_fifo_source(tmp_path):
    bundle = tmp_path / "case"
    source = write_sequence(_sequence(), tmp_path / "in" / "s.igs.mha")
    (bundle / "sweeps").mkdir(parents=True)
    (bundle / "sweeps" / "s.igs.mha").symlink_to(source)
    with pytest.raises(CaseBundleError, match="sweeps/s.igs.mha is a symbolic link; links are refused"):
        add_file(bundle, source, "sweep")
    os.mkfifo(tmp_path / "pipe.igs.mha")
    with no_hang(), pytest.raises(CaseBundleError, match=r"is a FIFO \(named pipe\), not a regular file"):
        add_file(bundle, tmp_path / "pipe.igs.mha", "sweep")


def test_add_file_refuses_a_mha_header_whose_pixels_are_in_another_file(tmp_path):
    header, _ = _detached_sweep(tmp_path / "in", "s.igs.mha", None)
    with pytest.raises(CaseBundleError, match="detached-header files keep their pixels in a second file"):
        add_file(tmp_path / "case", header, "sweep")
    assert not (tmp_path / "case" / "sweeps" / "s.igs.mha").exists()


def _case_with_attachment_folder(tmp_path: Path) -> tuple[Path, Case]:
    bundle = tmp_path / "case"
    sweep = write_sequence(_sequence(), bundle / "sweeps" / "s.igs.mha")
    (bundle / "notes").mkdir()
    (bundle / "notes" / "a.txt").write_bytes(b"operator notes")
    case = _case_with_sweep(
        bundle, "sweeps/s.igs.mha", path_sha256(sweep),
        attachments=[Attachment("other", "notes", path_sha256(bundle / "notes"), "notes")],
    )  # fmt: skip
    save_case(case, bundle)
    return bundle, case


@pytest.mark.parametrize("what", ["file link out", "file link in", "folder link", "fifo"])
def test_links_and_fifos_inside_an_attachment_folder_are_refused(tmp_path, what):
    bundle, case = _case_with_attachment_folder(tmp_path)
    assert load_case(bundle).attachments[0].path == "notes"
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not part of the bundle")
    member = bundle / "notes" / "extra"
    if what == "file link out":
        member.symlink_to(secret)
    elif what == "file link in":
        member.symlink_to(bundle / "notes" / "a.txt")
    elif what == "folder link":
        member.symlink_to(tmp_path)
    else:
        os.mkfifo(member)
    kind = r"is a FIFO \(named pipe\), not a regular file" if what == "fifo" else "is a symbolic link; links are refused"
    for verify in (True, False):
        with no_hang(), pytest.raises(CaseBundleError, match=rf"attachments\[0\].path 'notes': extra {kind}") as caught:
            load_case(bundle, verify_digests=verify)
        assert caught.value.path == str(bundle / "case.json")
    with no_hang(), pytest.raises(CaseBundleError, match=f"extra {kind}"):
        path_sha256(bundle / "notes")
    with no_hang(), pytest.raises(CaseBundleError, match=f"extra {kind}"):
        save_case(case, bundle)


def test_a_symlinked_attachment_folder_and_case_json_are_refused(tmp_path):
    bundle, _ = _case_with_attachment_folder(tmp_path)
    (bundle / "notes").rename(tmp_path / "notes")
    (bundle / "notes").symlink_to(tmp_path / "notes")
    with pytest.raises(CaseBundleError, match=r"attachments\[0\].path 'notes' is a symbolic link; links are refused"):
        load_case(bundle)
    (bundle / "notes").unlink()
    (tmp_path / "notes").rename(bundle / "notes")
    (bundle / "case.json").rename(tmp_path / "case.json")
    (bundle / "case.json").symlink_to(tmp_path / "case.json")
    with pytest.raises(CaseBundleError, match="case.json is a symbolic link; links are refused"):
        load_case(bundle)


# -- FIFOs: every reader refuses them without blocking ----------------------------------------------


def _readers():
    from workbench.io.dicom import load_dicom_file_series, read_dicom_file
    from workbench.io.ground_truth import GroundTruthError, read_ground_truth
    from workbench.io.itk_transform import describe_transform, read_tfm_text
    from workbench.io.markups import read_markups_json
    from workbench.io.plus_config import read_device_set

    return [
        ("s.igs.mha", read_sequence, SequenceFileError),
        ("t2.nii.gz", load_volume, VolumeError),
        ("t2.mhd", describe_volume, VolumeError),
        ("IM0001.dcm", read_dicom_file, DicomError),
        ("IM0002.dcm", load_dicom_file_series, DicomError),
        ("IM0003.dcm", load_volume, DicomError),
        ("PlusDeviceSet.xml", read_device_set, DeviceSetError),
        ("plan.mrk.json", read_markups_json, WorkbenchError),
        ("t.tfm", read_tfm_text, WorkbenchError),
        ("t.h5", describe_transform, WorkbenchError),
        ("ground_truth.json", read_ground_truth, GroundTruthError),
    ]


@pytest.mark.parametrize("name, read, error", _readers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_reader_refuses_a_fifo_at_once(tmp_path, name, read, error):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with no_hang(), pytest.raises(error) as caught:
        read(fifo)
    assert caught.value.path == str(fifo)
    assert "FIFO (named pipe), not a regular file" in caught.value.problem


def test_case_json_that_is_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "case.json")
    with no_hang(), pytest.raises(CaseBundleError, match=r"case.json is a FIFO \(named pipe\), not a regular file"):
        load_case(tmp_path)


@pytest.mark.parametrize("name", ["sweep.igs.mha", "unknown"])
def test_workbench_info_on_a_fifo_exits_2_at_once_with_one_line(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "workbench", "info", str(fifo)], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 60
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        f"workbench info: error: {fifo}: is a FIFO (named pipe), not a regular file; refused (reading it could block)"
    ]


# -- new-case: a .mha header naming a data file becomes one file in the bundle -----------------------


def test_new_case_rewrites_a_mha_sweep_whose_pixels_are_in_another_file(tmp_path, shared_data):
    from tests.real_cases import DEVICE_SET, NIFTI_MRI, SWEEP
    from workbench.case.create import new_case

    original = read_sequence(shared_data / SWEEP)
    detached = write_sequence(original, tmp_path / "src" / "sweep.mhd")
    renamed = detached.rename(detached.with_name("sweep.igs.mha"))  # still names sweep.zraw beside it
    assert detached_data_file(renamed).name in ("sweep.zraw", "sweep.raw")
    folder = new_case(tmp_path / "case", mri=shared_data / NIFTI_MRI, sweeps=[renamed], device_set=shared_data / DEVICE_SET)
    (sweep,) = load_case(folder).sweeps
    assert sorted(p.name for p in (folder / "sweeps").iterdir()) == [Path(sweep.path).name]
    assert detached_data_file(folder / sweep.path) is None and sweep.sha256 == file_sha256(folder / sweep.path)
    np.testing.assert_array_equal(read_sequence(folder / sweep.path).images, original.images)
