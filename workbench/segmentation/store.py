"""Segment a case bundle and attach the label map; write a label map with its table, atomically.

:func:`segment_case` (``workbench segment CASE_DIR``) reads the case's MRI and its named ``Mri``
landmarks, segments (:func:`workbench.segmentation.segment.segment_mri`) and attaches the result
as the case's ``label_map``: ``labels/label_map.nrrd`` on the MRI's grid, its table in the sidecar
``labels/label_map.nrrd.labels.json`` and the provenance in ``labels/segmentation.json``, with
digests in ``case.json``. :func:`attach_label_map` is the attaching step alone (the editor's
autosave uses it). Either all of it lands or, on any error, the case is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from workbench.anatomy import LabelMap
from workbench.segmentation.fit import SegmentationError

__all__ = ["PROVENANCE_FILE", "attach_label_map", "case_landmarks_mri", "segment_case", "write_label_map"]

#: Provenance of the segmentation, beside the label map.
PROVENANCE_FILE = "labels/segmentation.json"


def write_label_map(label_map: LabelMap, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``label_map`` (NRRD/NIfTI/MHA by ending) and its ``.labels.json`` table; return both paths.

    Each file is written atomically (:func:`workbench.io.volume.save_volume`,
    :func:`workbench.io.label_table.write_label_table`).
    """
    from workbench.io.label_table import sidecar_path, write_label_table
    from workbench.io.volume import save_volume

    path = Path(path)
    label_map.check_values()
    save_volume(label_map.image, path)
    return path, write_label_table(dict(label_map.names), sidecar_path(path))


def attach_label_map(
    case_dir: str | os.PathLike,
    label_map: LabelMap,
    description: str,
    provenance: dict | None = None,
    check_grid: bool = True,
) -> Path:
    """Make ``label_map`` the case's ``label_map`` attachment (replacing any earlier one); return its path.

    Checks the grid, then attaches through :func:`workbench.case.labels.attach_label_map` (staged,
    moved into place, previous files restored on any failure), with ``provenance`` as
    :data:`PROVENANCE_FILE`. ``check_grid=False`` skips reading the MRI to compare grids (the editor's later autosaves).

    Raises
    ------
    SegmentationError
        The label map is not on the MRI's grid.
    CaseBundleError
        The case cannot be read or has no MRI.
    """
    from workbench.case.labels import attach_label_map as attach_to_case
    from workbench.case.storage import load_case
    from workbench.errors import CaseBundleError
    from workbench.io.volume import load_volume

    case_dir = Path(case_dir)
    case = load_case(case_dir, verify_digests=False)
    if case.mri is None:
        raise CaseBundleError("the case has no MRI to attach a label map to", case_dir)
    mri = load_volume(case_dir / case.mri.path).image if check_grid else label_map.image
    image = label_map.image
    if image.GetSize() != mri.GetSize() or not np.allclose(image.GetOrigin(), mri.GetOrigin(), atol=1e-3) or not np.allclose(
        image.GetSpacing(), mri.GetSpacing(), atol=1e-4
    ) or not np.allclose(image.GetDirection(), mri.GetDirection(), atol=1e-4):
        raise SegmentationError(f"{case_dir}: the label map is not on the grid of the case MRI ({case.mri.path})")
    extra = {}
    if provenance is not None:
        extra[PROVENANCE_FILE] = (json.dumps(provenance, indent=1) + "\n", "provenance of the segmentation")
    return attach_to_case(case_dir, label_map, description, case=case, extra_files=extra)


def case_landmarks_mri(case) -> dict[str, np.ndarray]:
    """The case's landmarks in the ``Mri`` frame: name -> (3,) LPS mm."""
    return {lm.name: np.asarray(lm.point_mm, dtype=float) for lm in case.landmarks if lm.frame == "Mri"}


def segment_case(
    case_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    parameters=None,
    progress: Callable[[str], None] | None = None,
):
    """Segment the case's MRI and attach the label map (module docstring).

    Parameters
    ----------
    case_dir : str or path-like
        A case bundle with an MRI and named ``Mri`` landmarks of at least one vertebral level.
    out : str or path-like, optional
        Also write the label map (and its ``.labels.json``) here, e.g. for another tool.
    parameters : SegmentParameters, optional
    progress : callable(str), optional

    Returns
    -------
    (Path, Segmentation)
        The attached label map's path in the bundle, and the segmentation.

    Raises
    ------
    SegmentationError, CaseBundleError, VolumeError
        No MRI, too few named landmarks, an unreadable case; nothing is attached.
    """
    from workbench.case.storage import load_case
    from workbench.errors import CaseBundleError
    from workbench.io.volume import load_volume
    from workbench.segmentation.segment import METHOD, segment_mri

    case_dir = Path(case_dir)
    if not (case_dir / "case.json").is_file():
        raise CaseBundleError("not a case folder (no case.json)", case_dir)
    case = load_case(case_dir)
    if case.mri is None:
        raise SegmentationError(f"{case_dir}: the case has no MRI to segment")
    say = progress or (lambda message: None)
    say(f"reading the MRI {case.mri.path}")
    mri = load_volume(case_dir / case.mri.path).image
    landmarks = case_landmarks_mri(case)
    digest = json.dumps({"mri_sha256": case.mri.sha256, "landmarks": {k: list(v) for k, v in sorted(landmarks.items())}})
    try:
        segmentation = segment_mri(
            mri, landmarks, parameters, progress=say, input_digest=hashlib.sha256(digest.encode()).hexdigest()
        )
    except SegmentationError as exc:
        raise SegmentationError(f"{case_dir}: {exc}") from None
    segmentation.provenance["mri"] = {"path": case.mri.path, "sha256": case.mri.sha256}
    if out is not None:
        say(f"writing {out}")
        write_label_map(segmentation.label_map, out)
    say("attaching the label map to the case")
    levels = ", ".join(segmentation.levels)
    path = attach_label_map(
        case_dir, segmentation.label_map, f"segmented from the MRI ({levels}): {METHOD}", segmentation.provenance
    )
    return path, segmentation
