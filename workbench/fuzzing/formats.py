"""The input formats of the campaign: base files, how each is mutated, which reader runs, what is accepted.

Each :class:`Format` has

- ``bases(workdir)``: valid inputs, real files of the shared data (read in place, never copied
  into the project) and small synthetic ones written by workbench itself;
- ``mutate(base, rng)``: the files of one mutated input, ``{relative name: bytes}``;
- ``run(folder, main)``: the same functions the CLI and notebooks call on that input; it returns
  what they produced, or raises;
- ``check(result, main)``: the validation layer on what was accepted (finite, physical ranges,
  rotations orthonormal); a :class:`~workbench.errors.WorkbenchError` here means garbage was
  accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from workbench.errors import WorkbenchError
from workbench.fuzzing.mutate import HOSTILE_NUMBERS, mutate_bytes, mutate_header_text, mutate_json, mutate_xml_text, pick
from workbench.validation import (
    check_affine,
    check_coordinates_mm,
    check_finite,
    check_image_geometry,
    check_spacing_mm,
)

__all__ = ["FORMATS", "Base", "Format", "default_shared_data"]


def default_shared_data() -> Path:
    """``$WORKBENCH_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("WORKBENCH_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class Base:
    """One valid input: its files (``{relative name: bytes}``) and the name of the file the reader opens."""

    name: str
    files: dict[str, bytes]
    main: str


@dataclass
class Format:
    name: str
    weight: float
    bases: Callable[[Path, Path], list[Base]]
    mutate: Callable[[Base, np.random.Generator], dict[str, bytes]]
    run: Callable[[Path, str], object]
    check: Callable[[object, Path], None]


def _read(shared: Path, relative: str) -> bytes:
    return (shared / relative).read_bytes()


# -- header + data files (MetaIO, NRRD) ------------------------------------------------------


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """(text header, rest) of a MetaIO or NRRD file."""
    if data.startswith(b"NRRD"):
        end = data.find(b"\n\n")
        return (data, b"") if end < 0 else (data[: end + 1], data[end + 1 :])
    match = re.search(rb"ElementDataFile\s*=\s*[^\n]*\n", data)
    if match is None:
        return data, b""
    return data[: match.end()], data[match.end() :]


def _mutate_text_header(data: bytes, rng: np.random.Generator) -> bytes:
    head, rest = _split_head(data)
    separator = ":" if data.startswith(b"NRRD") else "="
    text = mutate_header_text(head.decode("latin-1"), rng, separator=separator)
    return text.encode("latin-1", errors="replace") + rest


def _mutate_header_file(base: Base, rng: np.random.Generator) -> dict[str, bytes]:
    files = dict(base.files)
    name = pick(rng, sorted(files))
    data = files[name]
    roll = rng.random()
    if name.endswith((".nii", ".nii.gz")):
        raw = gzip.decompress(data) if name.endswith(".gz") else data
        raw = _mutate_nifti(raw, rng) if roll < 0.7 else mutate_bytes(raw, rng)
        files[name] = gzip.compress(raw, 1) if name.endswith(".gz") else raw
    elif name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")) and roll < 0.75:
        files[name] = _mutate_text_header(data, rng)
    else:
        head = len(_split_head(data)[0]) if roll < 0.9 else 0
        files[name] = mutate_bytes(data, rng, protect=head if rng.random() < 0.5 else 0)
    return files


# NIfTI-1 header fields: (offset, struct format, count)
_NIFTI_FIELDS = (
    (0, "i", 1), (40, "h", 8), (70, "h", 1), (72, "h", 1), (76, "f", 8), (108, "f", 1), (112, "f", 2),
    (252, "h", 2), (256, "f", 6), (280, "f", 12), (344, "4s", 1),
)  # fmt: skip


def _mutate_nifti(raw: bytes, rng: np.random.Generator) -> bytes:
    buffer = bytearray(raw)
    for _ in range(int(rng.integers(1, 4))):
        offset, fmt, count = pick(rng, _NIFTI_FIELDS)
        size = struct.calcsize("<" + fmt)
        at = offset + size * int(rng.integers(count))
        if at + size > len(buffer):
            continue
        if fmt == "4s":
            buffer[at : at + 4] = pick(rng, (b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0"))
            continue
        token = pick(rng, HOSTILE_NUMBERS)
        try:
            value = float(token)
        except ValueError:
            value = float(rng.normal() * 1e4)
        if fmt == "f":
            value = float(np.clip(value, -3.4e38, 3.4e38)) if np.isfinite(value) else value
        if fmt in ("h", "i"):
            limit = 32767 if fmt == "h" else 2**31 - 1
            value = int(np.clip(np.nan_to_num(value, nan=-1, posinf=limit, neginf=-limit), -limit - 1, limit))
        struct.pack_into("<" + fmt, buffer, at, value)
    return bytes(buffer)


# -- sequences -----------------------------------------------------------------------------


def _synthetic_sequences(workdir: Path) -> list[Base]:
    from workbench.io.sequence import TrackedSequence, write_sequence

    pose = np.array([[0.0, -1, 0, 10], [1, 0, 0, 20], [0, 0, 1, 30], [0, 0, 0, 1]])
    images = np.arange(3 * 6 * 5, dtype=np.uint8).reshape(3, 6, 5)
    bases = []
    for name, compress in (("s.igs.mha", True), ("s.seq.mha", False), ("s.igs.nrrd", True), ("s.mhd", False)):
        folder = workdir / f"seq-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        sequence = TrackedSequence(
            images=images,
            timestamps_s=[1.0, 1.1, 1.2],
            transforms={"ProbeToTracker": np.tile(pose, (3, 1, 1))},
            frame_fields={"FrameNumber": ["1", "2", "3"]},
            image_orientation="MF",
        )
        write_sequence(sequence, folder / name, compress=compress)
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        bases.append(Base(f"synthetic {name}", files, name))
    return bases


def _sequence_bases(shared: Path, workdir: Path) -> list[Base]:
    real = [
        "plus-nwire-freehand/NwirePhantomFreehandCropped.igs.mha",
        "plus-spine-bone-L14/outputPlusTransverseProcessEnhancerTest.igs.mha",
        "plus-nwire-freehand/NwirePhantomFreehand.igs.nrrd",
    ]
    bases = [Base(r, {Path(r).name: _read(shared, r)}, Path(r).name) for r in real if (shared / r).is_file()]
    return bases + _synthetic_sequences(workdir)


def _run_sequence(folder: Path, main: str):
    from workbench.io.sequence import describe_sequence, read_sequence

    sequence = read_sequence(folder / main)
    describe_sequence(folder / main)
    return sequence


def _check_sequence(sequence, path: Path) -> None:
    check_finite(sequence.timestamps_s, "timestamps", path)
    for name, matrices in sequence.transforms.items():
        ok = sequence.transform_status[name]
        for k in np.flatnonzero(ok):
            check_affine(matrices[k], f"{name} frame {k}", path)


# -- device sets and reconstruction ----------------------------------------------------------


_DEVICE_SETS = (
    "plus-calibration-configs/PlusDeviceSet_fCal_Sim_VolumeReconstruction.xml",
    "plus-calibration-configs/PlusDeviceSet_fCal_Ultrasonix_C5-2_Ascension3DG_3.xml",
    "plus-calibration-configs/PlusDeviceSet_fCal_Ultrasonix_C5-2_NDIPolaris_fCal3.xml",
    "plus-calibration-configs/PlusDeviceSet_fCal_Ultrasonix_L14-5_Ascension3DG_3.0.xml",
    "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml",
    "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_MAXI.xml",
    "plus-spine-phantom-freehand/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml",
    "plus-nwire-freehand/PlusDeviceSet_NwirePhantomFreehand_vtkVolumeReconstructorTest2.xml",
    "plus-spine-bone-L14/BoneUltrasound_L14_config.xml",
    "plus-spine-bone-L14/SpineUltrasound-Lumbar-C5_config.xml",
)


def _device_set_bases(shared: Path, workdir: Path) -> list[Base]:
    return [Base(r, {"config.xml": _read(shared, r)}, "config.xml") for r in _DEVICE_SETS if (shared / r).is_file()]


def _mutate_device_set(base: Base, rng: np.random.Generator) -> dict[str, bytes]:
    data = base.files[base.main]
    if rng.random() < 0.8:
        data = mutate_xml_text(data.decode("latin-1"), rng).encode("utf-8", errors="replace")
    else:
        data = mutate_bytes(data, rng)
    return {base.main: data}


def _run_device_set(folder: Path, main: str):
    from workbench.io.plus_config import describe_device_set, read_device_set

    device_set = read_device_set(folder / main)
    describe_device_set(folder / main)
    return device_set


def _check_device_set(device_set, path: Path) -> None:
    for definition in device_set.coordinate_definitions:
        check_affine(definition.transform.matrix, definition.transform.name, path)
    config = device_set.volume_reconstruction
    if config is not None:
        _check_reconstruction_config(config, path)


def _check_reconstruction_config(config, path: Path) -> None:
    from workbench.io.plus_config import MAX_PIXEL_COORDINATE

    check_spacing_mm(config.output_spacing_mm, "OutputSpacing", path)
    check_coordinates_mm(config.output_origin_mm, "OutputOrigin", path)
    pixels = check_finite([*config.fan_origin_px, config.fan_radius_start_px, config.fan_radius_stop_px], "fan", path)
    if np.max(np.abs(pixels)) > MAX_PIXEL_COORDINATE:
        raise WorkbenchError(f"fan origin or radius beyond {MAX_PIXEL_COORDINATE:g} pixels", path)
    if np.max(np.abs(check_finite(config.fan_angles_deg, "FanAnglesDeg", path))) > 180.0:
        raise WorkbenchError("FanAnglesDeg beyond +-180 deg", path)


_RECONSTRUCTION_XML = (
    "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml",
    "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_MAXI.xml",
    "plus-spine-phantom-freehand/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_LATE.xml",
)

_RECONSTRUCTION_EXTRAS = (
    'OutputExtent="0 {a} 0 {b} 0 {c}"', 'OutputOrigin="{x} {y} {z}"', 'FanAnglesDeg="{x} {y}"',
    'FanOriginPixel="{x} {y}"', 'FanRadiusStopPixel="{x}"', 'SkipInterval="{a}"', 'PixelRejectionThreshold="{x}"',
    'ClipRectangleSize="{a} {b}"', 'ClipRectangleOrigin="{a} {b}"', 'OutputSpacing="{x} {y} {z}"',
)  # fmt: skip

_HOLE_FILLING = (
    '<HoleFillingElement Type="GAUSSIAN" Size="{a}" Stdev="{x}" MinimumKnownVoxelsRatio="{y}" />',
    '<HoleFillingElement Type="STICK" StickLengthLimit="{a}" NumberOfSticksToUse="{b}" />',
    '<HoleFillingElement Type="DISTANCE_WEIGHT_INVERSE" Size="{a}" MinimumKnownVoxelsRatio="{x}" />',
    '<HoleFillingElement Type="NEAREST_NEIGHBOR" Size="{a}" MinimumKnownVoxelsRatio="{x}" />',
)


def _reconstruction_bases(shared: Path, workdir: Path) -> list[Base]:
    from workbench.io.sequence import TrackedSequence, write_sequence

    folder = workdir / "reconstruction"
    folder.mkdir(parents=True, exist_ok=True)
    count = 4
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, 2, 3] = np.arange(count) * 0.5
    images = (np.arange(count * 24 * 20) % 251).astype(np.uint8).reshape(count, 24, 20)
    sequence = TrackedSequence(
        images=images, timestamps_s=np.arange(count) * 0.1, transforms={"ProbeToReference": poses}, image_orientation="MF"
    )
    sweep = write_sequence(sequence, folder / "sweep.igs.mha").read_bytes()
    bases = []
    for relative in _RECONSTRUCTION_XML:
        if (shared / relative).is_file():
            bases.append(Base(relative, {"config.xml": _read(shared, relative), "sweep.igs.mha": sweep}, "config.xml"))
    return bases


def _mutate_reconstruction(base: Base, rng: np.random.Generator) -> dict[str, bytes]:
    text = base.files["config.xml"].decode("utf-8")
    match = re.search(r"<VolumeReconstruction\b.*?(?:/>|</VolumeReconstruction>)", text, re.DOTALL)
    if match is None:
        raise RuntimeError(f"{base.name} has no VolumeReconstruction element")
    start, end = match.span()
    element = text[start:end]
    numbers = {
        "a": pick(rng, HOSTILE_NUMBERS[:12] + ("100000", "2000", "7", "255", "256", "1000000")),
        "b": pick(rng, HOSTILE_NUMBERS[:12] + ("100000", "9", "3")),
        "c": pick(rng, HOSTILE_NUMBERS),
        "x": pick(rng, HOSTILE_NUMBERS),
        "y": pick(rng, HOSTILE_NUMBERS),
        "z": pick(rng, HOSTILE_NUMBERS),
    }
    roll = rng.random()
    if roll < 0.4:
        extra = pick(rng, _RECONSTRUCTION_EXTRAS).format(**numbers)
        name = extra.split("=")[0]
        element = re.sub(rf'\s{name}="[^"]*"', "", element)
        element = element.replace("<VolumeReconstruction", f"<VolumeReconstruction {extra}", 1)
    elif roll < 0.7:
        kernel = pick(rng, _HOLE_FILLING).format(**numbers)
        element = re.sub(r"<HoleFillingElement[^>]*/>", kernel, element, count=1)
    else:
        element = mutate_xml_text(element, rng)
    return {"config.xml": (text[:start] + element + text[end:]).encode("utf-8"), "sweep.igs.mha": base.files["sweep.igs.mha"]}


def _run_reconstruction(folder: Path, main: str):
    from workbench.reconstruction.reconstruct import reconstruct_from_files

    return reconstruct_from_files(folder / "sweep.igs.mha", folder / main, image_to_reference_transform="ImageToReference")


def _check_reconstruction(result, path: Path) -> None:
    grid = result.grid
    check_spacing_mm(grid.spacing_mm, "output spacing", path)
    check_coordinates_mm(grid.origin_mm, "output origin", path)
    if not np.all(np.isfinite(result.volume.astype(float, copy=False))):
        raise WorkbenchError("reconstructed volume holds NaN or infinity", path)


# -- volumes ---------------------------------------------------------------------------------


def _volume_bases(shared: Path, workdir: Path) -> list[Base]:
    import SimpleITK as sitk

    bases = []
    for relative in (
        "plus-nwire-freehand/NwirePhantomFreehandReconstructed.mha",
        "spine-crops-tptbox-mri-ct/sample_mri/sub-mri_seg-vert_label-6_msk.nii.gz",
        "spine-crops-tptbox-mri-ct/sample_ct/sub-ct_seg-vert_label-22_msk.nii.gz",
    ):
        if (shared / relative).is_file():
            name = "volume" + ("".join(Path(relative).suffixes[-2:]) if relative.endswith(".gz") else Path(relative).suffix)
            bases.append(Base(relative, {name: _read(shared, relative)}, name))
    image = sitk.GetImageFromArray((np.arange(5 * 6 * 7) % 200).astype(np.int16).reshape(5, 6, 7))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, 5.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    for suffix in (".nrrd", ".mha", ".mhd", ".nii", ".nhdr"):
        folder = workdir / f"volume{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / f"volume{suffix}"), useCompression=suffix in (".nrrd", ".mha"))
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        bases.append(Base(f"synthetic {suffix}", files, f"volume{suffix}"))
    return bases


def _run_volume(folder: Path, main: str):
    from workbench.io.volume import describe_volume, load_volume

    described = describe_volume(folder / main)
    loaded = load_volume(folder / main)
    return described, loaded


def _check_volume(result, path: Path) -> None:
    described, loaded = result
    image = loaded.image
    check_image_geometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), path)
    check_image_geometry(
        described["size"], described["spacing_mm"], described["origin_lps_mm"], described["direction"], path
    )


# -- DICOM -----------------------------------------------------------------------------------

_DICOM_SERIES = "mri-dicom-dcm_qa_decubitus/HFS/3_t1_fl2d_sag"

_DICOM_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "RescaleSlope",
    "RescaleIntercept", "InstanceNumber", "Modality", "PixelData", "PatientName", "PatientID", "StudyDate",
    "SpacingBetweenSlices", "NumberOfFrames",
)  # fmt: skip

_COMPRESSED_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70")


def _dicom_bases(shared: Path, workdir: Path) -> list[Base]:
    folder = shared / _DICOM_SERIES
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.dcm"))[10:13]
    return [Base("dicom 3 slices", {f"in/{p.name}": p.read_bytes() for p in files}, "in")]


def _mutate_dicom(base: Base, rng: np.random.Generator) -> dict[str, bytes]:
    import io

    import pydicom

    files = dict(base.files)
    name = pick(rng, sorted(files))
    roll = rng.random()
    if roll < 0.3:
        files[name] = mutate_bytes(files[name], rng, protect=0 if rng.random() < 0.3 else 132)
        return files
    dataset = pydicom.dcmread(io.BytesIO(files[name]))
    for _ in range(int(rng.integers(1, 3))):
        keyword = pick(rng, _DICOM_KEYWORDS)
        kind = rng.random()
        if kind < 0.3:
            if keyword in dataset:
                delattr(dataset, keyword)
        elif kind < 0.4 and "PixelData" in dataset:
            from pydicom.encaps import encapsulate

            dataset.file_meta.TransferSyntaxUID = pick(rng, _COMPRESSED_SYNTAXES)
            dataset.PixelData = encapsulate([bytes(dataset.PixelData)])  # not a real JPEG stream
        elif keyword in dataset and keyword != "PixelData":
            element = dataset.data_element(keyword)
            token = pick(rng, HOSTILE_NUMBERS)
            try:
                if element.VR in ("US", "SS", "UL", "SL"):
                    element.value = int(np.clip(float(token), -(2**15), 2**16 - 1))
                elif element.VM > 1 or element.VR in ("DS", "IS"):
                    count = element.VM if rng.random() < 0.8 else int(rng.integers(0, 8))
                    element.value = [token.strip() or "0"] * max(count, 1)
                else:
                    element.value = token
            except (ValueError, OverflowError, TypeError):
                element.value = None
    output = io.BytesIO()
    try:
        dataset.save_as(output, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - pydicom cannot write this mutation; fall back to bytes
        return {**files, name: mutate_bytes(files[name], rng)}
    files[name] = output.getvalue()
    return files


def _run_dicom(folder: Path, main: str):
    from workbench.anonymize import anonymize_folder
    from workbench.io.volume import load_volume

    refusals = []
    loaded = None
    try:
        loaded = load_volume(folder / main)
    except WorkbenchError as exc:
        refusals.append(exc)
    try:  # the anonymiser reads every file on its own: it must refuse or succeed cleanly too
        anonymize_folder(folder / main, folder / "out", case_id="FUZZ-1", salt=b"fuzz")
    except WorkbenchError as exc:
        refusals.append(exc)
    if loaded is None:
        raise refusals[0]
    return loaded


def _check_dicom(loaded, path: Path) -> None:
    image = loaded.image
    check_image_geometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), path)


# -- ITK transforms ----------------------------------------------------------------------------


def _transform_bases(shared: Path, workdir: Path) -> list[Base]:
    from workbench.frames import Transform
    from workbench.planning.export import write_registration_transform

    bases = []
    for name in ("rotation.tfm", "affine.tfm", "rotationAndAffine.tfm", "MRHeadResampledBSplineTransform.tfm", "TpsTransform.h5"):
        relative = f"itk-slicer-transforms/{name}"
        if (shared / relative).is_file():
            main = "transform" + Path(name).suffix
            bases.append(Base(relative, {main: _read(shared, relative)}, main))
    c, s = np.cos(0.3), np.sin(0.3)
    matrix = np.array([[c, -s, 0, 12.0], [s, c, 0, -4.0], [0, 0, 1, 7.5], [0, 0, 0, 1]])
    folder = workdir / "transforms"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".tfm", ".h5"):
        path = write_registration_transform(Transform.from_name("ReferenceToMri", matrix), folder / f"reference_to_mri{suffix}")
        bases.append(Base(f"synthetic {suffix}", {f"transform{suffix}": path.read_bytes()}, f"transform{suffix}"))
    return bases


def _mutate_transform(base: Base, rng: np.random.Generator) -> dict[str, bytes]:
    data = base.files[base.main]
    if base.main.endswith(".tfm") and rng.random() < 0.8:
        data = mutate_header_text(data.decode("latin-1"), rng, separator=":").encode("latin-1", errors="replace")
    else:
        data = mutate_bytes(data, rng)
    return {base.main: data}


def _run_transform(folder: Path, main: str):
    from workbench.io.itk_transform import describe_transform
    from workbench.planning.export import read_registration_transform

    described = describe_transform(folder / main)
    try:
        registration = read_registration_transform(folder / main)
    except WorkbenchError:
        registration = None  # not a rigid ReferenceToMri: a clean refusal of that reader
    return described, registration


def _check_transform(result, path: Path) -> None:
    described, registration = result
    for entry in described["transforms"]:
        if "matrix_4x4" in entry:
            check_affine(np.reshape(entry["matrix_4x4"], (4, 4)), entry["type"], path)
    if registration is not None:
        check_affine(registration.matrix, "ReferenceToMri", path, rigid=True)


# -- JSON documents: case.json, plan.json, Slicer markups -----------------------------------------


def _mutate_document(base: Base, rng: np.random.Generator) -> dict[str, bytes]:
    files = dict(base.files)
    data = files[base.main]
    if rng.random() < 0.8:
        files[base.main] = mutate_json(json.loads(data), rng)
    else:
        files[base.main] = mutate_bytes(data, rng)
    return files


def _example_plan():
    from workbench.frames import Transform
    from workbench.planning.model import NeedleSpec, Plan, Provenance, RegistrationSummary, Trajectory

    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    reference_to_mri = Transform.from_name("ReferenceToMri", [[c, -s, 0, 12.0], [s, c, 0, -4.0], [0, 0, 1, 7.5], [0, 0, 0, 1]])
    needle = NeedleSpec(50.0, "23G")
    trajectories = (
        Trajectory("L4 right", "L4 right exiting nerve root", (-3.0, 22.0, 34.0), (-3.0, 50.0, 40.0), needle,
                   6.0, "ropivacaine 0.375 %", "paramedian in-plane", (0.0, 1.0, 0.0)),
        Trajectory("L5 right", "L5 right exiting nerve root", (-2.0, 24.0, 30.0), (-1.0, 52.0, 30.0), needle),
    )  # fmt: skip
    registration = RegistrationSummary("landmarks", reference_to_mri, fre_mm=1.2, tre_mm=2.5)
    provenance = Provenance(mri_digest="ab" * 32, author="AB", created_utc="2026-01-02T03:04:05Z")
    return Plan("PLAN-1", trajectories, provenance, registration, "fuzz plan")


def _plan_bases(shared: Path, workdir: Path) -> list[Base]:
    from workbench.planning.export import write_plan_json

    path = write_plan_json(_example_plan(), workdir / "plan.json")
    return [Base("synthetic plan.json", {"plan.json": path.read_bytes()}, "plan.json")]


def _run_plan(folder: Path, main: str):
    from workbench.planning.export import load_plan

    return load_plan(folder / main)


def _check_plan(plan, path: Path) -> None:
    for trajectory in plan.trajectories:
        check_coordinates_mm(trajectory.target_lps_mm, f"{trajectory.name} target", path)
        check_coordinates_mm(trajectory.entry_lps_mm, f"{trajectory.name} entry", path)
    if plan.registration is not None:
        check_affine(plan.registration.reference_to_mri.matrix, "ReferenceToMri", path, rigid=True)


def _markups_bases(shared: Path, workdir: Path) -> list[Base]:
    from workbench.planning.export import write_markups

    bases = []
    relative = "slicer-markups-schema/example_pointlist_from_slicer_docs.mrk.json"
    if (shared / relative).is_file():
        bases.append(Base(relative, {"points.mrk.json": _read(shared, relative)}, "points.mrk.json"))
    path = write_markups(_example_plan(), workdir / "plan.mrk.json")
    bases.append(Base("synthetic plan markups", {"plan.mrk.json": path.read_bytes()}, "plan.mrk.json"))
    return bases


def _run_markups(folder: Path, main: str):
    from workbench.io.markups import describe_markups
    from workbench.planning.export import points_from_markups, trajectories_from_markups
    from workbench.planning.model import NeedleSpec

    described = describe_markups(folder / main)
    points = points_from_markups(folder / main)
    try:
        trajectories = trajectories_from_markups(folder / main, NeedleSpec(50.0, "23G"))
    except WorkbenchError:
        trajectories = []  # a point list without entry/target pairs: a clean refusal
    return described, points, trajectories


def _check_markups(result, path: Path) -> None:
    described, points, trajectories = result
    for markup in described["markups"]:
        check_coordinates_mm(np.reshape(markup["points_lps_mm"], (-1, 3)), "control points", path)
    for label, point in points.items():
        check_coordinates_mm(point, f"point {label!r}", path)
    for trajectory in trajectories:
        check_coordinates_mm(trajectory.target_lps_mm, "target", path)
        check_coordinates_mm(trajectory.entry_lps_mm, "entry", path)


def _case_bases(shared: Path, workdir: Path) -> list[Base]:
    from workbench.case import Case, FileRef, Landmark, MriRef, SweepRef, Target, save_case
    from workbench.frames import Transform

    folder = workdir / "case"
    contents = {
        "mri/t2.nii.gz": b"not really a NIfTI volume",
        "sweeps/sweep1.igs.mha": b"not really a sequence file",
        "device_sets/probe.xml": b"<PlusConfiguration/>",
    }
    for relative, data in contents.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)

    def sha(relative: str) -> str:
        return hashlib.sha256(contents[relative]).hexdigest()

    image_to_probe = np.array([[0.0, 0.08, 0, 11.0], [-0.08, 0, 0, 50.0], [0, 0, 0.08, 0], [0, 0, 0, 1]])
    reference_to_mri = np.array([[0.0, -1, 0, 12.5], [1, 0, 0, -40.25], [0, 0, 1, 101.0], [0, 0, 0, 1]])
    case = Case(
        case_id="PVB-007",
        title="L3-L4 left paravertebral block",
        mri=MriRef("mri/t2.nii.gz", sha("mri/t2.nii.gz"), "MR", "T2 sagittal", size_px=(320, 320, 40), spacing_mm=(0.6, 0.6, 4.0)),
        sweeps=[
            SweepRef(
                "sweeps/sweep1.igs.mha", sha("sweeps/sweep1.igs.mha"), Transform(image_to_probe, "Image", "Probe"),
                calibration_error_mm=0.58, device_set=FileRef("device_sets/probe.xml", sha("device_sets/probe.xml")),
            )
        ],
        landmarks=[
            Landmark("L4 spinous process", "Mri", (1.5, -20.25, 33.0), pair="L4SP"),
            Landmark("L4 spinous process", "Reference", (10.0, 5.0, -2.5), pair="L4SP"),
        ],
        targets=[Target("left L3-L4", "paravertebral space", (-25.0, 10.5, 52.0))],
        transforms={"ReferenceToMri": Transform(reference_to_mri, "Reference", "Mri")},
    )  # fmt: skip
    save_case(case, folder)
    document = json.loads((folder / "case.json").read_text())
    document["modified_utc"] = "2026-01-01T00:00:00Z"  # the save time: fixed, so inputs are reproducible
    (folder / "case.json").write_text(json.dumps(document, indent=2))
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return [Base("synthetic case", files, "case.json")]


def _run_case(folder: Path, main: str):
    from workbench.case import describe_case, load_case

    case = load_case(folder)
    describe_case(folder)
    return case


def _check_case(case, path: Path) -> None:
    for name, transform in case.transforms.items():
        check_affine(transform.matrix, name, path)
    for landmark in case.landmarks:
        check_coordinates_mm(landmark.point_mm, f"landmark {landmark.name!r}", path)
    for target in case.targets:
        check_coordinates_mm(target.point_lps_mm, f"target {target.name!r}", path)
    for sweep in case.sweeps:
        check_affine(sweep.image_to_probe.matrix, "image_to_probe", path)
    if case.mri is not None and case.mri.spacing_mm is not None:
        check_spacing_mm(case.mri.spacing_mm, "mri.spacing_mm", path)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("sequence", 0.30, _sequence_bases, _mutate_header_file, _run_sequence, _check_sequence),
        Format("device_set", 0.10, _device_set_bases, _mutate_device_set, _run_device_set, _check_device_set),
        Format("reconstruction", 0.05, _reconstruction_bases, _mutate_reconstruction, _run_reconstruction, _check_reconstruction),
        Format("volume", 0.10, _volume_bases, _mutate_header_file, _run_volume, _check_volume),
        Format("dicom", 0.05, _dicom_bases, _mutate_dicom, _run_dicom, _check_dicom),
        Format("transform", 0.08, _transform_bases, _mutate_transform, _run_transform, _check_transform),
        Format("case", 0.12, _case_bases, _mutate_document, _run_case, _check_case),
        Format("plan", 0.10, _plan_bases, _mutate_document, _run_plan, _check_plan),
        Format("markups", 0.10, _markups_bases, _mutate_document, _run_markups, _check_markups),
    )
}
