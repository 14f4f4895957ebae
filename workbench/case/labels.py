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
``"totalsegmentator"`` with ``task``
    One multi-label file of a TotalSegmentator task (``--ml``): values read with that task's
    class table (:data:`TOTALSEGMENTATOR_TASKS`: ``total``, ``total_mr``, ``vertebrae_mr``) and
    translated by :data:`workbench.anatomy.FOREIGN_NAMES`. A value whose class has no meaning in
    the vocabulary (``humerus_left``) is refused unless ``table`` maps it explicitly
    (``69,soft_tissue``); ``table`` entries take precedence over the task's table.
``"slicer-seg"``
    A 3D Slicer ``.seg.nrrd`` (:mod:`workbench.io.seg_nrrd`): one mask per segment, named by
    ``Segment<N>_Name``; one layer or several (4D); segments of two layers on one voxel are refused.
``"dicom-seg"``
    A DICOM Segmentation file (:mod:`workbench.io.dicom_seg`, highdicom): frames placed by their
    per-frame positions; each segment named by its ``SegmentLabel``, or else by the meaning of
    its ``SegmentedPropertyTypeCodeSequence``.

Every name goes through :func:`workbench.anatomy.resolve_label_name` (vocabulary names, or
foreign names with a declared mapping); a name that is neither is refused, never guessed.
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
    "attach_label_map",
    "IMPORT_FORMAT_HELP",
    "LABEL_MAP_FILE",
    "TOTALSEGMENTATOR_TASKS",
    "TPTBOX_SUBREGIONS",
    "TPTBOX_VERTEBRA_LEVELS",
    "import_label_map",
    "is_synthetic_case",
    "label_map_summary",
    "read_case_label_map",
    "read_label_map_file",
]

#: Where an imported label map goes in the bundle (its table beside it, ``.labels.json``).
LABEL_MAP_FILE = "labels/label_map.nrrd"
#: Source formats of :func:`import_label_map`, with what each reads (``workbench labels import --help``).
IMPORT_FORMAT_HELP: Mapping[str, str] = {
    "table": "NIfTI/NRRD/MHA label image + label table (--table, or its <file>.labels.json): JSON, CSV, "
             "ITK-SNAP label description, 3D Slicer colour table",
    "totalsegmentator": "TotalSegmentator output: a folder of per-structure masks (vertebrae_L4.nii.gz, ...), "
                        "or one multi-label file with --task (total, total_mr, vertebrae_mr)",
    "tptbox": "TPTBox/SPINEPS *seg-vert* mask (+ *seg-subreg* beside it) or the folder holding them",
    "slicer-seg": "3D Slicer .seg.nrrd: segment names from its header, one layer or several",
    "dicom-seg": "DICOM SEG (Modality SEG; highdicom): segment labels / property types, frames by position",
}
IMPORT_FORMATS = tuple(IMPORT_FORMAT_HELP)

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


def _total_v2() -> dict[int, str]:
    names = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
             "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
             "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
             "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
             "kidney_cyst_right", "sacrum", "vertebrae_S1"]
    names += [f"vertebrae_L{i}" for i in range(5, 0, -1)] + [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    names += [f"vertebrae_C{i}" for i in range(7, 0, -1)]
    names += ["heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
              "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
              "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava",
              "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right",
              "iliac_vena_left", "iliac_vena_right", "humerus_left", "humerus_right", "scapula_left", "scapula_right",
              "clavicula_left", "clavicula_right", "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord",
              "gluteus_maximus_left", "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right",
              "gluteus_minimus_left", "gluteus_minimus_right", "autochthon_left", "autochthon_right", "iliopsoas_left",
              "iliopsoas_right", "brain", "skull"]
    names += [f"rib_left_{i}" for i in range(1, 13)] + [f"rib_right_{i}" for i in range(1, 13)]
    names += ["sternum", "costal_cartilages"]
    return dict(enumerate(names, start=1))


def _total_mr() -> dict[int, str]:
    names = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
             "adrenal_gland_right", "adrenal_gland_left", "lung_left", "lung_right", "esophagus", "small_bowel",
             "duodenum", "colon", "urinary_bladder", "prostate", "sacrum", "vertebrae", "intervertebral_discs",
             "spinal_cord", "heart", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein",
             "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right", "humerus_left",
             "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right", "femur_left",
             "femur_right", "hip_left", "hip_right", "gluteus_maximus_left", "gluteus_maximus_right",
             "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right",
             "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain"]
    return dict(enumerate(names, start=1))


def _vertebrae_mr() -> dict[int, str]:
    names = ["sacrum"] + [f"vertebrae_L{i}" for i in range(5, 0, -1)] + [f"vertebrae_T{i}" for i in range(12, 0, -1)]
    return dict(enumerate(names + [f"vertebrae_C{i}" for i in range(7, 0, -1)], start=1))


#: TotalSegmentator (v2) task -> its multi-label value -> class name (TotalSegmentator's
#: ``map_to_binary.class_map``). The names are TotalSegmentator's; which of them the vocabulary
#: knows is declared in :data:`workbench.anatomy.FOREIGN_NAMES`.
TOTALSEGMENTATOR_TASKS: Mapping[str, Mapping[int, str]] = {
    "total": _total_v2(),
    "total_mr": _total_mr(),
    "vertebrae_mr": _vertebrae_mr(),
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
    """One label image from boolean (K, J, I) masks named by label-table names; values by name order.

    ``masks`` holds (source file, mask, name); masks of one name share a value; overlapping masks are refused.
    """
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


def _from_totalsegmentator_file(source: Path, task: str, table_path: Path | None) -> tuple[sitk.Image, dict[int, str]]:
    """A TotalSegmentator multi-label file read with ``task``'s class table (``table`` entries first)."""
    import SimpleITK as sitk

    from workbench.anatomy import LabelMapError, resolve_label_name
    from workbench.io.label_table import read_raw_label_table

    if task not in TOTALSEGMENTATOR_TASKS:
        raise LabelMapError(
            f"{source}: unknown TotalSegmentator task {task!r}; known: {', '.join(TOTALSEGMENTATOR_TASKS)} "
            "(or give --table FILE with the file's value -> name table, format 'table')"
        )
    classes = TOTALSEGMENTATOR_TASKS[task]
    explicit = read_raw_label_table(table_path) if table_path is not None else {}
    image = _read_labels(source)
    present = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if int(v) != 0]
    names = {0: _UNLABELLED}
    for value in present:
        if value in explicit:
            try:
                names[value] = str(resolve_label_name(explicit[value]))
            except LabelMapError as exc:
                raise LabelMapError(f"{table_path}: label value {value}: {exc}") from None
            continue
        if value not in classes:
            raise LabelMapError(
                f"{source}: label value {value} is not a class of TotalSegmentator task {task!r} "
                f"(values 1..{max(classes)}); is --task right?"
            )
        try:
            names[value] = str(resolve_label_name(classes[value]))
        except LabelMapError:
            raise LabelMapError(
                f"{source}: label value {value} ({classes[value]}, TotalSegmentator task {task!r}) has no meaning in the "
                f"label vocabulary; map it explicitly with --table FILE (a CSV line such as '{value},soft_tissue')"
            ) from None
    if not present:
        raise LabelMapError(f"{source}: empty mask (no labelled voxel)")
    return image, names


def _segment_name(source: Path, what: str, candidates: list[str]) -> str:
    """The label-table name of a segment: the first candidate the vocabulary (or FOREIGN_NAMES) knows."""
    from workbench.anatomy import LabelMapError, resolve_label_name

    tried = [c for c in candidates if c]
    for candidate in tried:
        try:
            return str(resolve_label_name(candidate))
        except LabelMapError:
            continue
    raise LabelMapError(
        f"{source}: {what}: " + " / ".join(repr(c) for c in tried or [""])
        + " is not a name of the label vocabulary (workbench.anatomy.Label) nor a declared foreign name; "
        "rename the segment (e.g. 'vertebra_L4', 'spinal_canal')"
    )


def _from_seg_nrrd(source: Path) -> tuple[sitk.Image, dict[int, str]]:
    import SimpleITK as sitk

    from workbench.io.seg_nrrd import read_seg_nrrd

    seg = read_seg_nrrd(source)
    names = [_segment_name(source, segment.describe(), [segment.name]) for segment in seg.segments]
    ordered = sorted(set(names), key=_name_order)
    value_of = {name: value for value, name in enumerate(ordered, start=1)}
    image = sitk.GetImageFromArray(seg.label_image([value_of[name] for name in names]))
    image.CopyInformation(seg.reference)
    return image, {0: _UNLABELLED, **{value: name for name, value in value_of.items()}}


def _from_dicom_seg(source: Path) -> tuple[sitk.Image, dict[int, str]]:
    from workbench.io.dicom_seg import read_dicom_seg

    seg = read_dicom_seg(source)
    masks = [
        (source, mask, _segment_name(source, segment.describe(), [segment.label, segment.property_type]))
        for segment, mask in zip(seg.segments, seg.masks)
    ]
    return _combine(masks, seg.reference)


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


def _guess_format(source: Path, table: Path | None, task: str | None = None) -> str:
    from workbench.io.dicom_seg import is_dicom_seg
    from workbench.io.seg_nrrd import is_seg_nrrd

    if task is not None:
        return "totalsegmentator"
    if source.is_file() and is_seg_nrrd(source):
        return "slicer-seg"
    if source.is_file() and not _is_volume(source) and is_dicom_seg(source):
        return "dicom-seg"
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
    task: str | None = None,
) -> Path:
    """Import a segmentation as the case's label map (with its table); return the label map's path.

    Parameters
    ----------
    case_dir : str or path-like
        A case bundle with an MRI.
    source : str or path-like
        Label image, TotalSegmentator folder or multi-label file, TPTBox vertebra mask / folder,
        ``.seg.nrrd`` or DICOM SEG file (module docstring).
    table : str or path-like, optional
        Label table (JSON, CSV, ITK-SNAP, Slicer colour table) of a label image (format
        ``"table"``), or explicit names for values of a TotalSegmentator multi-label file.
    fmt : {"table", "totalsegmentator", "tptbox", "slicer-seg", "dicom-seg"}, optional
        Default: ``"totalsegmentator"`` with ``task``; ``"slicer-seg"`` for ``*.seg.nrrd``;
        ``"dicom-seg"`` for a DICOM file of Modality SEG; ``"table"`` with ``table``;
        ``"tptbox"`` for ``*seg-vert*`` sources; a folder ``"totalsegmentator"``; another file
        ``"table"`` (its own ``.labels.json`` sidecar).
    task : str, optional
        TotalSegmentator task of a multi-label file (:data:`TOTALSEGMENTATOR_TASKS`).

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
    from workbench.case.storage import load_case
    from workbench.io.volume import load_volume

    case_dir, source = Path(case_dir), Path(source)
    table_path = None if table is None else Path(table)
    case = load_case(case_dir)
    if case.mri is None:
        raise LabelMapError(f"{case_dir}: the case has no MRI to put the label map on")
    if not source.exists():
        raise LabelMapError(f"{source}: no such file or folder")
    fmt = fmt or _guess_format(source, table_path, task)
    if fmt not in IMPORT_FORMATS:
        raise LabelMapError(f"{source}: unknown label map format {fmt!r}; expected one of {', '.join(IMPORT_FORMATS)}")
    multi_label = fmt == "totalsegmentator" and source.is_file()
    if table_path is not None and fmt != "table" and not multi_label:
        raise LabelMapError(
            f"{table_path}: --table goes with a label image (format 'table') or a TotalSegmentator multi-label file, not {fmt!r}"
        )
    if task is not None and not multi_label:
        raise LabelMapError(f"{source}: --task goes with a TotalSegmentator multi-label file (format 'totalsegmentator')")
    if fmt == "table":
        if not _is_volume(source):
            raise LabelMapError(f"{source}: not a NIfTI/NRRD/MHA label image")
        labels, names = _from_table(source, table_path)
    elif multi_label:
        if task is None:
            raise LabelMapError(
                f"{source}: a TotalSegmentator multi-label file needs its task: --task "
                + "|".join(TOTALSEGMENTATOR_TASKS) + " (or the folder of per-structure masks)"
            )
        labels, names = _from_totalsegmentator_file(source, task, table_path)
    elif fmt == "totalsegmentator":
        labels, names = _from_totalsegmentator(source)
    elif fmt == "slicer-seg":
        labels, names = _from_seg_nrrd(source)
    elif fmt == "dicom-seg":
        labels, names = _from_dicom_seg(source)
    else:
        labels, names = _from_tptbox(source)
    mri = load_volume(case_dir / case.mri.path).image
    on_mri = _onto_mri(labels, mri, source)
    label_map = LabelMap(on_mri, names)  # every name parsed; attach_label_map checks every value is named
    return attach_label_map(case_dir, label_map, f"imported segmentation ({fmt})", case=case)


def attach_label_map(
    case_dir: str | os.PathLike,
    label_map: LabelMap,
    description: str,
    *,
    case=None,
    extra_files: Mapping[str, tuple[str, str]] | None = None,
) -> Path:
    """Make ``label_map`` (already on the MRI's grid) the case's ``label_map`` attachment; return its path.

    The one way a label map lands in a bundle (``labels import``, ``segment`` and the segmentation
    editor's autosave): the image at :data:`LABEL_MAP_FILE`, its table in the sidecar, and each of
    ``extra_files`` (bundle-relative path -> (text, attachment description), e.g. provenance) are
    staged beside their destinations, moved into place, then ``case.json`` is saved with their
    digests. If anything fails the previous files are put back and ``case.json`` is unchanged.
    ``case`` is the loaded case when the caller has it (default: read from ``case_dir``).
    """
    import shutil
    import tempfile

    from workbench.case.storage import file_sha256, load_case, save_case
    from workbench.io.label_table import sidecar_path, write_label_table
    from workbench.io.volume import save_volume

    case_dir = Path(case_dir)
    if case is None:
        case = load_case(case_dir, verify_digests=False)
    extra_files = dict(extra_files or {})
    label_map.check_values()
    destination = case_dir / LABEL_MAP_FILE
    sidecar = sidecar_path(destination)
    relative_sidecar = LABEL_MAP_FILE + sidecar.name[len(destination.name):]
    finals = [destination, sidecar] + [case_dir / relative for relative in extra_files]
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".label-map.", suffix=".tmp", dir=destination.parent))
    moved: list[tuple[Path, Path | None]] = []  # (final, backup or None)
    try:
        staged = [save_volume(label_map.image, staging / destination.name),
                  write_label_table(dict(label_map.names), staging / sidecar.name)]
        for i, (text, _) in enumerate(extra_files.values()):
            staged.append(staging / f"extra-{i}")
            staged[-1].write_text(text, encoding="utf-8")
        for final, new in zip(finals, staged):
            final.parent.mkdir(parents=True, exist_ok=True)
            backup = None
            if final.exists():
                backup = staging / f"previous.{len(moved)}.{final.name}"
                os.replace(final, backup)
            moved.append((final, backup))
            os.replace(new, final)
        replaced = {relative_sidecar, *extra_files}
        attachments = [a for a in case.attachments if a.role != "label_map" and a.path not in replaced]
        attachments.append(Attachment("label_map", LABEL_MAP_FILE, file_sha256(destination), description))
        attachments.append(Attachment("other", relative_sidecar, file_sha256(sidecar), "label table of the label map"))
        for relative, (_, what) in extra_files.items():
            attachments.append(Attachment("other", relative, file_sha256(case_dir / relative), what))
        case.attachments = attachments
        save_case(case, case_dir)
    except BaseException:
        for final, backup in reversed(moved):
            final.unlink(missing_ok=True)
            if backup is not None:
                os.replace(backup, final)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


# -- command line ------------------------------------------------------------------------------------


def register_cli(subparsers) -> None:
    """Add ``labels import`` to the ``workbench`` sub-command parsers."""
    p = subparsers.add_parser("labels", help="a case's label map: import a segmentation with its names")
    sub = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    import argparse
    import textwrap

    formats = "\n".join(f"  {name:17s} {text}" for name, text in IMPORT_FORMAT_HELP.items())
    q = sub.add_parser(
        "import",
        help="import a segmentation (label image + table, TotalSegmentator, TPTBox, Slicer .seg.nrrd, DICOM SEG) as the case's label map",
        description=textwrap.fill(
            "Import a segmentation as the case's label map, resampled onto the MRI grid (nearest neighbour), "
            "with its names. Names must be in the label vocabulary or declared foreign names; anything else, "
            "a value without a name, a segmentation that misses the MRI or an empty one is refused (exit 2) "
            "and nothing is attached.", 78),
        epilog="formats (--format; default: from the source):\n" + formats,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("case_dir", help="case folder (with an MRI)")
    q.add_argument(
        "--from", dest="source", required=True, metavar="PATH",
        help="label image, TotalSegmentator folder or multi-label file, TPTBox seg-vert mask/folder, .seg.nrrd, DICOM SEG file",
    )  # fmt: skip
    q.add_argument("--table", default=None, metavar="FILE",
                   help="label table of a label image (JSON, CSV, ITK-SNAP labels, Slicer .ctbl), or explicit names "
                        "for values of a TotalSegmentator multi-label file")
    q.add_argument("--format", dest="fmt", choices=IMPORT_FORMATS, default=None, help="source format (default: from the source)")
    q.add_argument("--task", default=None, choices=sorted(TOTALSEGMENTATOR_TASKS),
                   help="TotalSegmentator task of a multi-label file (its value -> class table)")
    q.set_defaults(func=_handle_import)


def label_map_summary(path: str | os.PathLike) -> dict:
    """What an imported label map holds: its files, each value's name and voxel count, the bone voxels.

    Returns
    -------
    dict
        ``{"label_map": str, "table": str, "labels": [{"value", "name", "voxels"}, ...], "bone_voxels": int}``
        (what ``workbench labels import`` prints as JSON).
    """
    from workbench.io.label_table import sidecar_path

    label_map = read_label_map_file(path)
    counts = np.bincount(label_map.array.ravel().astype(np.int64), minlength=max(label_map.names) + 1)
    return {
        "label_map": str(path),
        "table": str(sidecar_path(path)),
        "labels": [{"value": v, "name": n, "voxels": int(counts[v])} for v, n in sorted(label_map.names.items())],
        "bone_voxels": int(label_map.bone_mask().sum()),
    }


def _handle_import(args) -> int:
    import json
    import sys

    path = import_label_map(args.case_dir, args.source, table=args.table, fmt=args.fmt, task=args.task)
    json.dump(label_map_summary(path), sys.stdout)
    sys.stdout.write("\n")
    return 0
