"""Write small synthetic DICOM MR series with pydicom, for tests.

A series is a stack of ``n_slices`` single-frame MR images: slice k sits at
``origin_lps_mm + k * slice_step_mm * normal`` (``normal = row_cosine x column_cosine``),
unless ``positions_lps_mm`` gives every IPP. Pixel values encode the slice and the pixel:
``1000 * (k + 1) + 10 * j + i`` (k slice, j row, i column), so a test can tell which slice
ended where. Every file carries identifying attributes (names, IDs, dates, institution,
UIDs, a private block, an overlay, a nested sequence) for the anonymisation tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL_HFS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

#: Identifying values written into every synthetic file (none may survive anonymisation).
IDENTIFIERS = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "PID-8675309",
    "PatientBirthDate": "19610317",
    "PatientAge": "062Y",
    "OtherPatientIDs": "MRN-5550123",
    "AccessionNumber": "ACC-99887766",
    "StudyID": "STUDY-4242",
    "StudyDate": "20230914",
    "SeriesDate": "20230915",
    "AcquisitionDate": "20230916",
    "ContentDate": "20230917",
    "StudyTime": "101112.131415",
    "InstitutionName": "Saint Example Spine Clinic",
    "InstitutionAddress": "12 Nowhere Lane, Exampletown",
    "ReferringPhysicianName": "Referrer^Robert",
    "PerformingPhysicianName": "Performer^Paula",
    "OperatorsName": "Operator^Otto",
    "StationName": "STATION-MR7",
    "DeviceSerialNumber": "SN-31415926",
}
PRIVATE_CREATOR = "ACME PRIVATE"
PRIVATE_VALUE = "private-secret-Doe-Jane"
NESTED_PERSON = "Nested^Nellie"


@dataclass
class SyntheticSeries:
    """What :func:`write_series` wrote.

    Attributes
    ----------
    files : list of Path
        Written files, in geometric slice order (k ascending); missing slices are absent.
    slice_indices : list of int
        The slice index k of each written file.
    positions_lps_mm : (N, 3) float array
        IPP of each written file, same order.
    pixels : (N, rows, cols) uint16 array
        Stored values of each written file, same order.
    """

    folder: Path
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    iop: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float]
    files: list[Path]
    slice_indices: list[int]
    positions_lps_mm: np.ndarray
    pixels: np.ndarray


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """Unit normal ``row_cosine x column_cosine`` of an ImageOrientationPatient."""
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return normal / np.linalg.norm(normal)


def write_series(
    folder: Path,
    *,
    n_slices: int = 4,
    rows: int = 6,
    cols: int = 5,
    pixel_spacing_mm: tuple[float, float] = (0.8, 0.7),
    slice_step_mm: float = 2.5,
    iop: Sequence[float] = AXIAL_HFS,
    origin_lps_mm: Sequence[float] = (-10.0, 20.0, 30.0),
    positions_lps_mm: Sequence[Sequence[float]] | None = None,
    missing: Sequence[int] = (),
    patient_position: str = "HFS",
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "t2_tse_tra",
    shuffle_seed: int | None = None,
    name_prefix: str = "IM",
    rescale: tuple[float, float] | None = None,
    modify: Callable[[int, Dataset], None] | None = None,
) -> SyntheticSeries:
    """Write a synthetic MR series into ``folder`` and return what was written.

    Parameters
    ----------
    pixel_spacing_mm : (row spacing, column spacing), as DICOM PixelSpacing.
    positions_lps_mm : optional (n_slices, 3) IPPs overriding the regular stack.
    missing : slice indices k not written (gaps).
    shuffle_seed : when given, file names and InstanceNumbers are a random permutation
        of the slice order, so neither tells the geometric order.
    rescale : (slope, intercept) written as RescaleSlope/RescaleIntercept.
    modify : called as ``modify(k, dataset)`` before each file is written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    normal = slice_normal(iop)
    if positions_lps_mm is None:
        positions = np.asarray(origin_lps_mm, float) + np.outer(np.arange(n_slices) * slice_step_mm, normal)
    else:
        positions = np.asarray(positions_lps_mm, float)
    kept = [k for k in range(n_slices) if k not in set(missing)]
    order = list(range(len(kept)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    sop_uids = [generate_uid() for _ in kept]
    files, pixels = [], []
    for n, k in enumerate(kept):
        values = (1000 * (k + 1) + 10 * np.arange(rows)[:, None] + np.arange(cols)[None, :]).astype(np.uint16)
        dataset = _mr_slice(values, positions[k], iop, pixel_spacing_mm, patient_position, description)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.FrameOfReferenceUID, dataset.SOPInstanceUID = frame_uid, sop_uids[n]
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uids[n]
        dataset.InstanceNumber = order[n] + 1
        dataset.ReferencedImageSequence = DicomSequence([_reference(sop_uids[(n + 1) % len(kept)])])
        if rescale is not None:
            dataset.RescaleSlope, dataset.RescaleIntercept = rescale
        if modify is not None:
            modify(k, dataset)
        path = folder / f"{name_prefix}{order[n] + 1:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
        pixels.append(values)
    return SyntheticSeries(
        folder=folder,
        series_uid=series_uid,
        study_uid=study_uid,
        frame_of_reference_uid=frame_uid,
        iop=tuple(float(v) for v in iop),
        pixel_spacing_mm=tuple(pixel_spacing_mm),
        files=files,
        slice_indices=kept,
        positions_lps_mm=positions[kept],
        pixels=np.array(pixels),
    )


def _mr_slice(values, position, iop, pixel_spacing_mm, patient_position, description) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = MRImageStorage
    dataset.Modality = "MR"
    dataset.Manufacturer = "ACME"
    dataset.SeriesDescription = description
    dataset.ProtocolName = description
    dataset.SeriesNumber = 7
    dataset.PatientPosition = patient_position
    dataset.PatientSex = "F"
    for keyword, value in IDENTIFIERS.items():
        setattr(dataset, keyword, value)
    dataset.ImagePositionPatient = [f"{v:.6f}" for v in position]
    dataset.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    dataset.PixelSpacing = list(pixel_spacing_mm)
    dataset.SliceThickness = 2.0
    dataset.Rows, dataset.Columns = values.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = values.tobytes()
    block = dataset.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    dataset.add_new(0x60000010, "US", values.shape[0])  # overlay rows
    dataset.add_new(0x60000011, "US", values.shape[1])  # overlay columns
    dataset.add_new(0x60003000, "OW", bytes(2 * ((values.size + 15) // 16)))  # overlay data
    return dataset


def _reference(sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = MRImageStorage
    item.ReferencedSOPInstanceUID = sop_uid
    item.PersonName = NESTED_PERSON  # not where a real file has one: tests that sequences are recursed
    block = item.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    return item


def write_text_file(path: Path, text: str = "not DICOM\n") -> Path:
    """A non-DICOM file (README, notes) as found in real export folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
