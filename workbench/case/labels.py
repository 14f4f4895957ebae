"""A case's label map: imported from a segmentation with its names, and read back with them.

:func:`import_label_map` (``workbench labels import``) turns a segmentation into the case's
``label_map`` attachment: ``labels/label_map.nrrd`` on the MRI's grid plus its table in the sidecar
``labels/label_map.nrrd.labels.json`` (:mod:`workbench.io.label_table`), both with digests in
``case.json``. Sources (``fmt``):

``"table"``
    A NIfTI/NRRD/MHA label image and a label table file (``table``; default the image's own
    sidecar ``<file>.labels.json``). Values keep their numbers.
``"totalsegmentator"``
    A folder of per-structure masks named as TotalSegmentator names them (``vertebrae_L4.nii.gz``;
    :data:`workbench.anatomy.FOREIGN_NAMES`). Empty masks are skipped (TotalSegmentator writes
    one per class); overlapping masks are refused.
``"tptbox"``
    TPTBox/SPINEPS vertebra (``*seg-vert*``) and sub-region (``*seg-subreg*``) masks: a folder
    holding both, or the vertebra mask (its sub-region mask found beside it). Vertebra IDs follow
    TPTBox's numbering (1-7 C1-C7, 8-19 T1-T12, 28 T13, 20-25 L1-L6, 26 S1, 29-33 S2-S6; discs
    100+ID and endplates 200+ID take the level of ID); sub-regions 41 arch, 42 spinous process,
    43/44 costal (transverse) process left/right, 45-48 superior/inferior articular processes
    left/right, 49/50 vertebral body, 60 spinal cord, 61 spinal canal, 62 endplate, 100 disc.

Value 0 is "unlabelled" (not segmented, not air). A source on another grid is resampled onto
the MRI's (nearest neighbour); one that does not overlap the MRI is refused. On any error nothing
is written or attached.

:func:`read_case_label_map` is how every reader (planning CLI, widgets, demo) gets a case's
:class:`~workbench.anatomy.LabelMap` with its table. Frames: docs/frames.md (LPS mm).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from workbench.case.model import Attachment

if TYPE_CHECKING:  # SimpleITK and the readers load when a label map is read, so `workbench --help` stays fast
    import SimpleITK as sitk

    from workbench.anatomy import LabelMap

__all__ = [
    "IMPORT_FORMATS",
    "LABEL_MAP_FILE",
    "TPTBOX_SUBREGIONS",
    "TPTBOX_VERTEBRA_LEVELS",
    "import_label_map",
    "is_synthetic_case",
    "read_case_label_map",
    "read_label_map_file",
]

#: Where an imported label map goes in the bundle (its table beside it, ``.labels.json``).
LABEL_MAP_FILE = "labels/label_map.nrrd"
#: Source formats of :func:`import_label_map`.
IMPORT_FORMATS = ("table", "totalsegmentator", "tptbox")

#: TPTBox vertebra ID -> level (TPTBox ``v_idx2name``; 27, the coccyx, has no level here).
TPTBOX_VERTEBRA_LEVELS: Mapping[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    28: "T13",
    **{19 + i: f"L{i}" for i in range(1, 7)},
    26: "S1",
    **{27 + i: f"S{i}" for i in range(2, 7)},
}
#: TPTBox sub-region value -> (vocabulary class name, side).
TPTBOX_SUBREGIONS: Mapping[int, tuple[str, str | None]] = {
    41: ("VERTEBRAL_ARCH", None),
    42: ("SPINOUS_PROCESS", None),
    43: ("TRANSVERSE_PROCESS", "left"),
    44: ("TRANSVERSE_PROCESS", "right"),
    45: ("ARTICULAR_PROCESS", "left"),
    46: ("ARTICULAR_PROCESS", "right"),
    47: ("ARTICULAR_PROCESS", "left"),
    48: ("ARTICULAR_PROCESS", "right"),
    49: ("VERTEBRAL_BODY", None),
    50: ("VERTEBRAL_BODY", None),
    60: ("SPINAL_CORD", None),
    61: ("SPINAL_CANAL", None),
    62: ("ENDPLATE", None),
    100: ("DISC", None),
}
_UNLABELLED = "unlabelled"
_VOLUME_ENDINGS = (".nii", ".nii.gz", ".nrrd", ".mha")


# -- reading a case's label map ---------------------------------------------------------------------


def read_label_map_file(path: str | os.PathLike, synthetic: bool = False) -> LabelMap:
    """A label map file with its sidecar table (``<file>.labels.json``), values checked against it.

    Parameters
    ----------
    path : str or path-like
        NIfTI/NRRD/MHA label image.
    synthetic : bool
        The file belongs to a synthetic case (one with ground truth): without a sidecar it is read
        in the workbench encoding (:data:`workbench.anatomy.WORKBENCH_TABLE`), as the phantom wrote it.

    Raises
    ------
    LabelMapError
        No sidecar (and not synthetic): "a label map without a table"; a value missing from the table.
    """
    from workbench.anatomy import WORKBENCH_TABLE, LabelMap, LabelMapError
    from workbench.io.label_table import read_label_table, sidecar_path
    from workbench.io.volume import load_volume

    path = Path(path)
    table_path = sidecar_path(path)
    if table_path.is_file():
        table = read_label_table(table_path)
        label_map = LabelMap.from_volume(load_volume(path), table)
        try:
            return label_map.check_values()
        except LabelMapError as exc:
            raise LabelMapError(f"{path}: {exc}") from None
    if synthetic:
        return LabelMap.from_volume(load_volume(path), WORKBENCH_TABLE)
    raise LabelMapError(
        f"{path}: a label map without a table (no {table_path.name}); import it with `workbench labels import`"
    )


def read_case_label_map(case, case_dir: str | os.PathLike) -> LabelMap | None:
    """The case's ``label_map`` attachment as a :class:`~workbench.anatomy.LabelMap` with its table; None if none.

    A case with ground truth (the synthetic demo case) may keep its label map without a sidecar
    (workbench encoding); any other case's label map needs its table (:func:`read_label_map_file`).
    """
    found = next((a for a in case.attachments if a.role == "label_map"), None)
    if found is None:
        return None
    return read_label_map_file(Path(case_dir) / found.path, synthetic=is_synthetic_case(case))


def is_synthetic_case(case) -> bool:
    """True for a generated case (it has ground truth): its label map may be in the workbench encoding without a table."""
    return any(a.role == "ground_truth" for a in case.attachments)


# -- sources ----------------------------------------------------------------------------------------


def _is_volume(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_VOLUME_ENDINGS)


def _read_labels(path: Path) -> sitk.Image:
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError
    from workbench.io.volume import load_volume

    image = load_volume(path).image
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise LabelMapError(f"{path}: a label map must be a 3D scalar image")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise LabelMapError(f"{path}: label values must be integers, the image holds fractions")
        cast = sitk.Cast(image, sitk.sitkInt32)
        cast.CopyInformation(image)
        return cast
    return image


def _from_table(source: Path, table_path: Path | None) -> tuple[sitk.Image, dict[int, str]]:
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError
    from workbench.io.label_table import read_label_table, sidecar_path

    table_path = table_path or sidecar_path(source)
    if not table_path.is_file():
        raise LabelMapError(f"{source}: a label map without a table; give --table FILE (JSON, CSV, ITK-SNAP, Slicer .ctbl)")
    table = read_label_table(table_path)
    image = _read_labels(source)
    present = np.unique(sitk.GetArrayViewFromImage(image))
    missing = [int(v) for v in present if int(v) not in table and int(v) != 0]
    if missing:
        raise LabelMapError(
            f"{source}: label values missing from the table {table_path.name}: " + ", ".join(map(str, missing[:10]))
        )
    if 0 not in table:
        table[0] = _UNLABELLED
    return image, table


def _combine(masks: list[tuple[Path, np.ndarray, str]], reference: sitk.Image) -> tuple[sitk.Image, dict[int, str]]:
    """One label image from boolean masks named by label-table names; values by name order."""
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError

    names = sorted({name for _, _, name in masks}, key=_name_order)
    value_of = {name: index for index, name in enumerate(names, start=1)}
    dtype = np.uint8 if len(names) < 255 else np.uint16
    combined = np.zeros(masks[0][1].shape, dtype)
    owner = np.full(masks[0][1].shape, -1, np.int32)
    for index, (path, mask, name) in enumerate(masks):
        taken = mask & (owner >= 0)
        if taken.any():
            other = masks[int(owner[taken].flat[0])][0]
            raise LabelMapError(f"{path}: overlaps {other.name} in {int(taken.sum())} voxels; masks must not overlap")
        combined[mask] = value_of[name]
        owner[mask] = index
    image = sitk.GetImageFromArray(combined)
    image.CopyInformation(reference)
    return image, {0: _UNLABELLED, **{value: name for name, value in value_of.items()}}


def _name_order(name: str) -> tuple:
    from workbench.anatomy import VERTEBRAL_LEVELS, Label, resolve_label_name

    parsed = resolve_label_name(name)
    level = VERTEBRAL_LEVELS.index(parsed.level) if parsed.level else -1
    return (int(Label[parsed.label]), level, parsed.side or "")


def _mask_name(path: Path) -> str:
    name = path.name
    for ending in _VOLUME_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def _from_totalsegmentator(folder: Path) -> tuple[sitk.Image, dict[int, str]]:
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError, resolve_label_name

    if not folder.is_dir():
        raise LabelMapError(f"{folder}: a TotalSegmentator import needs the folder of per-structure masks")
    files = sorted(p for p in folder.iterdir() if _is_volume(p))
    if not files:
        raise LabelMapError(f"{folder}: no NIfTI/NRRD masks in the folder")
    reference, masks = None, []
    for path in files:
        image = _read_labels(path)
        if reference is None:
            reference = image
        elif not _same_grid(image, reference):
            raise LabelMapError(f"{path}: not on the grid of {files[0].name}; the masks of one segmentation share a grid")
        array = sitk.GetArrayFromImage(image)
        if not array.any():
            continue  # TotalSegmentator writes every class, present or not
        if np.setdiff1d(np.unique(array), [0, 1]).size:
            raise LabelMapError(f"{path}: a per-structure mask holds values other than 0 and 1")
        try:
            name = str(resolve_label_name(_mask_name(path)))
        except LabelMapError as exc:
            raise LabelMapError(f"{path}: {exc}") from None
        masks.append((path, array.astype(bool), name))
    if not masks:
        raise LabelMapError(f"{folder}: every mask is empty")
    return _combine(masks, reference)


def _tptbox_files(source: Path) -> tuple[Path, Path | None]:
    from workbench.anatomy import LabelMapError

    if source.is_dir():
        verts = sorted(p for p in source.iterdir() if "seg-vert" in p.name and _is_volume(p))
        subregs = sorted(p for p in source.iterdir() if "seg-subreg" in p.name and _is_volume(p))
        if len(verts) != 1 or len(subregs) > 1:
            raise LabelMapError(f"{source}: a TPTBox import needs one *seg-vert* mask (and at most one *seg-subreg*), found {len(verts)}")
        return verts[0], subregs[0] if subregs else None
    if "seg-vert" not in source.name:
        raise LabelMapError(f"{source}: a TPTBox import needs the *seg-vert* mask or the folder holding it")
    subreg = source.with_name(source.name.replace("seg-vert", "seg-subreg"))
    return source, subreg if subreg.is_file() else None


def _from_tptbox(source: Path) -> tuple[sitk.Image, dict[int, str]]:
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError, format_label_name

    vert_path, subreg_path = _tptbox_files(source)
    vert_image = _read_labels(vert_path)
    vert = sitk.GetArrayFromImage(vert_image).astype(np.int64)
    if subreg_path is not None:
        subreg_image = _read_labels(subreg_path)
        if not _same_grid(subreg_image, vert_image):
            raise LabelMapError(f"{subreg_path}: not on the grid of {vert_path.name}")
        subreg = sitk.GetArrayFromImage(subreg_image).astype(np.int64)
    else:
        subreg = np.zeros_like(vert)
    unknown = sorted(set(np.unique(subreg).tolist()) - set(TPTBOX_SUBREGIONS) - {0})
    if unknown:
        raise LabelMapError(f"{subreg_path}: TPTBox sub-region values the workbench does not know: {unknown[:10]}")
    level_ids = np.where(vert >= 200, vert - 200, np.where(vert >= 100, vert - 100, vert))
    values = np.unique(vert)
    unknown = [int(v) for v in values if v and int(v) % 100 not in TPTBOX_VERTEBRA_LEVELS or v >= 300]
    if unknown:
        raise LabelMapError(f"{vert_path}: TPTBox vertebra values without a level the workbench knows: {unknown[:10]}")
    masks = []
    pairs = np.unique(np.stack([level_ids.ravel(), subreg.ravel()]), axis=1).T
    for level_id, region in pairs:
        if level_id == 0 and region == 0:
            continue
        level = TPTBOX_VERTEBRA_LEVELS.get(int(level_id))
        label, side = TPTBOX_SUBREGIONS[int(region)] if region else ("VERTEBRA", None)
        if level_id and region == 0:
            vert_ids = np.unique(vert[(level_ids == level_id) & (subreg == 0)])
            label = "DISC" if np.all(vert_ids >= 100) and np.all(vert_ids < 200) else label
            label = "ENDPLATE" if np.all(vert_ids >= 200) else label
        name = format_label_name(label, level, side)
        masks.append((vert_path, (level_ids == level_id) & (subreg == region), name))
    if not masks:
        raise LabelMapError(f"{vert_path}: empty mask (no labelled voxel)")
    # several (level, region) pairs can share one name (45 and 47 are both left articular processes)
    merged: dict[str, np.ndarray] = {}
    for _, mask, name in masks:
        merged[name] = merged[name] | mask if name in merged else mask
    return _combine([(vert_path, mask, name) for name, mask in merged.items()], vert_image)


# -- onto the MRI grid -------------------------------------------------------------------------------


def _same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance * max(1.0, max(a.GetSpacing())))
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def _onto_mri(labels: sitk.Image, mri: sitk.Image, source: Path) -> sitk.Image:
    """``labels`` on the MRI's grid (nearest neighbour, 0 outside); refused when nothing lands inside."""
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError

    if not sitk.GetArrayViewFromImage(labels).any():
        raise LabelMapError(f"{source}: empty mask (no labelled voxel)")
    if _same_grid(labels, mri):
        out = sitk.Image(labels)
        out.CopyInformation(mri)
        return out
    out = sitk.Resample(labels, mri, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    if not sitk.GetArrayViewFromImage(out).any():
        raise LabelMapError(f"{source}: the segmentation does not overlap the case MRI")
    return out


# -- import -----------------------------------------------------------------------------------------


def _guess_format(source: Path, table: Path | None) -> str:
    if table is not None:
        return "table"
    if source.is_dir():
        if any("seg-vert" in p.name for p in source.iterdir()):
            return "tptbox"
        return "totalsegmentator"
    if "seg-vert" in source.name:
        return "tptbox"
    return "table"


def import_label_map(
    case_dir: str | os.PathLike,
    source: str | os.PathLike,
    table: str | os.PathLike | None = None,
    fmt: str | None = None,
) -> Path:
    """Import a segmentation as the case's label map (with its table); return the label map's path.

    Parameters
    ----------
    case_dir : str or path-like
        A case bundle with an MRI.
    source : str or path-like
        Label image, TotalSegmentator folder, or TPTBox vertebra mask / folder (module docstring).
    table : str or path-like, optional
        Label table of a label image (JSON, CSV, ITK-SNAP, Slicer colour table); format ``"table"``.
    fmt : {"table", "totalsegmentator", "tptbox"}, optional
        Default: ``"table"`` with ``table``; else ``"tptbox"`` for ``*seg-vert*`` sources, a folder
        ``"totalsegmentator"``, a file ``"table"`` (its own ``.labels.json`` sidecar).

    Returns
    -------
    Path
        ``case_dir/labels/label_map.nrrd``, on the MRI's grid; its table beside it
        (``.labels.json``); both attached in ``case.json`` (roles ``label_map`` and ``other``),
        replacing an earlier label map attachment.

    Raises
    ------
    LabelMapError
        Values missing from the table, a name the vocabulary lacks, overlapping masks, an empty
        mask, no overlap with the MRI, an unknown format. Nothing is written.
    CaseBundleError
        The case cannot be read, or has no MRI.
    """
    from workbench.anatomy import LabelMap, LabelMapError
    from workbench.case.storage import file_sha256, load_case, save_case
    from workbench.io.label_table import sidecar_path, write_label_table
    from workbench.io.volume import load_volume, save_volume

    case_dir, source = Path(case_dir), Path(source)
    table_path = None if table is None else Path(table)
    case = load_case(case_dir)
    if case.mri is None:
        raise LabelMapError(f"{case_dir}: the case has no MRI to put the label map on")
    if not source.exists():
        raise LabelMapError(f"{source}: no such file or folder")
    fmt = fmt or _guess_format(source, table_path)
    if fmt not in IMPORT_FORMATS:
        raise LabelMapError(f"{source}: unknown label map format {fmt!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    if table_path is not None and fmt != "table":
        raise LabelMapError(f"{table_path}: --table goes with a label image (format 'table'), not {fmt!r}")
    if fmt == "table":
        if not _is_volume(source):
            raise LabelMapError(f"{source}: not a NIfTI/NRRD/MHA label image")
        labels, names = _from_table(source, table_path)
    elif fmt == "totalsegmentator":
        labels, names = _from_totalsegmentator(source)
    else:
        labels, names = _from_tptbox(source)
    mri = load_volume(case_dir / case.mri.path).image
    on_mri = _onto_mri(labels, mri, source)
    label_map = LabelMap(on_mri, names).check_values()  # every name parsed, every value named

    destination = case_dir / LABEL_MAP_FILE
    sidecar = sidecar_path(destination)
    relative_sidecar = LABEL_MAP_FILE + sidecar.name[len(destination.name):]
    written = []
    try:
        written.append(save_volume(label_map.image, destination))
        written.append(write_label_table(dict(label_map.names), sidecar))
        kept = [a for a in case.attachments if a.role != "label_map" and a.path != relative_sidecar]
        case.attachments = kept + [
            Attachment("label_map", LABEL_MAP_FILE, file_sha256(destination), f"imported segmentation ({fmt})"),
            Attachment("other", relative_sidecar, file_sha256(sidecar), "label table of the label map"),
        ]
        save_case(case, case_dir)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return destination


# -- command line ------------------------------------------------------------------------------------


def register_cli(subparsers) -> None:
    """Add ``labels import`` to the ``workbench`` sub-command parsers."""
    p = subparsers.add_parser("labels", help="a case's label map: import a segmentation with its names")
    sub = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    q = sub.add_parser("import", help="import a segmentation (label image + table, TotalSegmentator, TPTBox) as the case's label map")
    q.add_argument("case_dir", help="case folder (with an MRI)")
    q.add_argument(
        "--from", dest="source", required=True, metavar="PATH",
        help="label image, TotalSegmentator folder or TPTBox seg-vert mask/folder",
    )  # fmt: skip
    q.add_argument("--table", default=None, metavar="FILE", help="label table of a label image: JSON, CSV, ITK-SNAP labels, Slicer .ctbl")
    q.add_argument("--format", dest="fmt", choices=IMPORT_FORMATS, default=None, help="source format (default: from the source)")
    q.set_defaults(func=_handle_import)


def _handle_import(args) -> int:
    from workbench.io.label_table import sidecar_path

    import json
    import sys

    path = import_label_map(args.case_dir, args.source, table=args.table, fmt=args.fmt)
    label_map = read_label_map_file(path)
    counts = np.bincount(label_map.array.ravel().astype(np.int64), minlength=max(label_map.names) + 1)
    summary = {
        "label_map": str(path),
        "table": str(sidecar_path(path)),
        "labels": [{"value": v, "name": n, "voxels": int(counts[v])} for v, n in sorted(label_map.names.items())],
        "bone_voxels": int(label_map.bone_mask().sum()),
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0
