"""The in-memory MRI volume: a SimpleITK image in LPS mm with its provenance.

Its own module so that both the DICOM loader (:mod:`workbench.io.dicom`) and the file loader
(:mod:`workbench.io.volume`) build it without importing each other. Frames: see docs/frames.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from workbench.frames import Transform, image_index_to_physical

__all__ = ["LoadedVolume", "compute_source_digest"]

_DIGEST_VERSION = b"workbench-volume-digest-v1\n"


@dataclass
class LoadedVolume:
    """A 3D volume in the ``Mri`` (patient LPS, mm) frame with its provenance.

    Attributes
    ----------
    image : SimpleITK.Image
        3D scalar image; origin, spacing and direction in LPS mm (ITK convention).
    metadata : dict
        Non-identifying facts about the source (``source_kind``, and for DICOM modality,
        series description, patient position, manufacturer, rescale...). Never names,
        IDs, dates, institutions or UIDs.
    warnings : list of str
        Problems found while loading that did not stop it (e.g. a missing slice).
    source_digest : str
        SHA-256 hex of the voxel values and the geometry (see :func:`compute_source_digest`):
        the same for every re-load and for an anonymised copy, so a plan can name its
        volume without identifiers.
    source_path : pathlib.Path
        The file or DICOM folder read.
    """

    image: sitk.Image
    metadata: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    source_digest: str = ""
    source_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.source_digest:
            self.source_digest = compute_source_digest(self.image)

    @property
    def size(self) -> tuple[int, int, int]:
        """Number of voxels along (i, j, k)."""
        return tuple(int(v) for v in self.image.GetSize())

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel spacing along (i, j, k), mm."""
        return tuple(float(v) for v in self.image.GetSpacing())

    @property
    def origin_lps_mm(self) -> tuple[float, float, float]:
        """LPS position of the centre of voxel (0, 0, 0), mm."""
        return tuple(float(v) for v in self.image.GetOrigin())

    @property
    def direction(self) -> tuple[float, ...]:
        """9 numbers, row major: column c is the LPS unit vector of index axis c (as ``GetDirection``)."""
        return tuple(float(v) for v in self.image.GetDirection())

    @property
    def mri_voxel_to_mri(self) -> Transform:
        """``MriVoxelToMri`` (docs/frames.md): continuous voxel index (i, j, k) to LPS mm.

        Its matrix is ``origin + direction @ diag(spacing) @ ijk`` as ITK's; map indices with
        ``volume.mri_voxel_to_mri.apply_to_points(ijk)`` ((N, 3) float array, ``MriVoxel``) to
        ``points_lps`` ((N, 3), mm).
        """
        matrix = image_index_to_physical(self.origin_lps_mm, self.spacing_mm, self.direction)
        return Transform.from_name("MriVoxelToMri", matrix)

    @property
    def mri_to_mri_voxel(self) -> Transform:
        """``MriToMriVoxel``: LPS mm to continuous voxel index (integers at voxel centres)."""
        return self.mri_voxel_to_mri.inverse()


def compute_source_digest(image: sitk.Image) -> str:
    """SHA-256 hex over the voxel values, pixel type and geometry of ``image``.

    Geometry (size, spacing, origin, direction) enters rounded to 1e-6 (mm or unit vector
    component), so the digest is stable across re-loads of the same data; voxel values
    enter as their little-endian bytes in (k, j, i) order.
    """
    geometry = {  # "+ 0.0" turns -0.0 into 0.0, which would otherwise serialise differently
        "size": list(image.GetSize()),
        "spacing": [round(v, 6) + 0.0 for v in image.GetSpacing()],
        "origin": [round(v, 6) + 0.0 for v in image.GetOrigin()],
        "direction": [round(v, 6) + 0.0 for v in image.GetDirection()],
        "pixel_type": image.GetPixelIDTypeAsString(),
        "components": image.GetNumberOfComponentsPerPixel(),
    }
    voxels = sitk.GetArrayViewFromImage(image)
    digest = hashlib.sha256(_DIGEST_VERSION)
    digest.update(json.dumps(geometry, sort_keys=True).encode("ascii"))
    digest.update(np.ascontiguousarray(voxels, dtype=voxels.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()
