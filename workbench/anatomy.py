"""The anatomical label vocabulary, and label maps that carry their label table.

A label map is an integer image whose values name tissues. The values mean nothing by
themselves: the synthetic phantom writes ``VERTEBRAL_BODY`` as 8, a foreign segmentation may
write it as 41. So a :class:`LabelMap` in memory always carries its *label table* (value ->
vocabulary name) and everything that interprets label values (bone surfaces for registration,
safety checks, the 3D scene) asks the table (:meth:`LabelMap.values_of`, :meth:`LabelMap.mask`,
:meth:`LabelMap.bone_mask`, :meth:`LabelMap.name_of`) instead of comparing with constants.

- :class:`Label`: the vocabulary. Its member names are the vocabulary names; its values are
  the workbench's own encoding (:data:`WORKBENCH_TABLE`), which the phantom and the demo case's
  label maps use.
- :data:`BONE_LABELS` / :data:`BONE_NAMES`: the bone classes; :data:`LEVEL_NAMES`: the
  vertebral levels of a level map.

This module sits at the bottom of the package beside :mod:`workbench.frames`: it imports only
numpy, SimpleITK, the standard library, :mod:`workbench.frames` and :mod:`workbench.errors`.
Tissue *properties* (T2 signal, acoustic impedance, ...) belong to the phantom
(:mod:`workbench.phantom.labels`), keyed by this vocabulary. Frames: docs/frames.md.
"""

from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np
import SimpleITK as sitk

from workbench.errors import WorkbenchError
from workbench.frames import Transform, apply_affine, image_index_to_physical

__all__ = [
    "BONE_LABELS",
    "BONE_NAMES",
    "FOREIGN_NAMES",
    "LEVEL_NAMES",
    "SIDES",
    "VERTEBRAL_LEVELS",
    "VOCABULARY",
    "WORKBENCH_TABLE",
    "Label",
    "LabelMap",
    "LabelMapError",
    "LabelName",
    "display_name",
    "format_label_name",
    "parse_label_name",
    "resolve_label_name",
]


class LabelMapError(WorkbenchError):
    """A label map or label table is malformed, or a label value is not in its table."""


class Label(IntEnum):
    """The anatomical vocabulary: names, and their values in the workbench encoding.

    The names are what a label table maps to; the values are those of :data:`WORKBENCH_TABLE`
    (uint8 label maps of the phantom and the demo case). 0 is air outside the body.
    """

    AIR = 0
    SKIN = 1
    FAT = 2  # subcutaneous fat
    ERECTOR_SPINAE = 3
    MULTIFIDUS = 4
    QUADRATUS_LUMBORUM = 5
    PSOAS = 6
    SOFT_TISSUE = 7  # everything else inside the body: viscera, fascia, fill
    VERTEBRAL_BODY = 8
    PEDICLE = 9
    LAMINA = 10
    SPINOUS_PROCESS = 11
    TRANSVERSE_PROCESS = 12
    ARTICULAR_PROCESS = 13  # superior/inferior articular processes (facet joint bone)
    SACRUM = 14
    FACET_JOINT = 15  # joint space and cartilage between articular processes
    DISC_ANNULUS = 16
    DISC_NUCLEUS = 17
    LIGAMENT = 18  # ligamentum flavum, interspinous/supraspinous ligaments
    DURA = 19  # dural sac wall
    CSF = 20
    NERVE_ROOT = 21  # exiting nerve roots and the cauda equina
    DORSAL_ROOT_GANGLION = 22
    RADICULAR_ARTERY = 23
    AORTA = 24
    IVC = 25
    KIDNEY = 26
    EPIDURAL_FAT = 27
    # Classes of imported segmentations (not drawn by the phantom): coarser or other parts.
    VERTEBRA = 28  # a whole vertebra (or the bone of one) whose parts are not told apart
    VERTEBRAL_ARCH = 29  # pedicles and laminae as one (TPTBox/SPINEPS "arcus vertebrae")
    SPINAL_CORD = 30
    SPINAL_CANAL = 31  # the canal's contents not told apart (dura, CSF, cauda equina, epidural fat)
    DISC = 32  # an intervertebral disc, annulus and nucleus not told apart
    ENDPLATE = 33  # vertebral endplate region as SPINEPS marks it (not counted as bone surface)
    UNLABELLED = 34  # not segmented: tissue unknown (value 0 of an imported segmentation; not air)


#: Every vocabulary name, in the order of :class:`Label`.
VOCABULARY: tuple[str, ...] = tuple(label.name for label in Label)

#: Labels that are bone (cortex and marrow are told apart by depth below the bone surface).
BONE_LABELS = frozenset(
    {
        Label.VERTEBRAL_BODY,
        Label.PEDICLE,
        Label.LAMINA,
        Label.SPINOUS_PROCESS,
        Label.TRANSVERSE_PROCESS,
        Label.ARTICULAR_PROCESS,
        Label.SACRUM,
        Label.VERTEBRA,
        Label.VERTEBRAL_ARCH,
    }
)
#: Vocabulary names of :data:`BONE_LABELS`.
BONE_NAMES = frozenset(label.name for label in BONE_LABELS)

#: Names of the vertebral levels in a level map (value i -> LEVEL_NAMES[i]; 0 = not a vertebra).
LEVEL_NAMES = ("", "L1", "L2", "L3", "L4", "L5", "S1")

#: Vertebral levels a label-table name may carry (``vertebra_L4``), cranial to caudal; T13 and L6
#: for transitional anatomy.
VERTEBRAL_LEVELS: tuple[str, ...] = (
    tuple(f"C{i}" for i in range(1, 8)) + tuple(f"T{i}" for i in range(1, 14)) + tuple(f"L{i}" for i in range(1, 7))
    + tuple(f"S{i}" for i in range(1, 7))
)
#: Sides a label-table name may carry (``transverse_process_L4_left``): the patient's left and right.
SIDES: tuple[str, ...] = ("left", "right")


def _totalsegmentator_names() -> dict[str, str]:
    names = {f"vertebrae_{level}": f"vertebra_{level}" for level in VERTEBRAL_LEVELS if level[0] in "CTL" and level not in ("T13", "L6")}
    names["vertebrae_S1"] = "vertebra_S1"
    names.update(
        {
            "sacrum": "sacrum",
            "vertebrae": "vertebra",  # total_mr: every vertebra in one class, no level
            "spinal_cord": "spinal_cord",
            "spinal_canal": "spinal_canal",
            "intervertebral_discs": "disc",
            "kidney_left": "kidney_left",
            "kidney_right": "kidney_right",
            "aorta": "aorta",
            "inferior_vena_cava": "ivc",
            "autochthon_left": "erector_spinae_left",
            "autochthon_right": "erector_spinae_right",
            "skin": "skin",
            "subcutaneous_fat": "fat",
        }
    )
    # Viscera are SOFT_TISSUE by the vocabulary's definition (everything else inside the body).
    for viscus in ("liver", "spleen", "stomach", "pancreas", "gallbladder", "duodenum", "small_bowel", "colon",
                   "esophagus", "urinary_bladder", "prostate", "adrenal_gland_left", "adrenal_gland_right"):
        names[viscus] = "soft_tissue"
    return names


#: Foreign label names with a declared meaning in the vocabulary (foreign name -> label-table name
#: as :func:`parse_label_name` reads it). TotalSegmentator's structure names (its ``total`` and
#: ``total_mr`` tasks; ``iliopsoas`` is left out: psoas and iliacus are one mask there), and the
#: usual background names of value 0. A name neither in the vocabulary nor here is refused.
FOREIGN_NAMES: Mapping[str, str] = MappingProxyType(
    {**_totalsegmentator_names(), "Clear Label": "unlabelled", "background": "unlabelled", "Background": "unlabelled"}
)


class LabelName(tuple):
    """A parsed label-table name: ``(label, level, side)``, e.g. ``("VERTEBRA", "L4", None)``.

    Attributes
    ----------
    label : str
        Vocabulary name (a :class:`Label` member name).
    level : str or None
        One of :data:`VERTEBRAL_LEVELS`.
    side : str or None
        ``"left"`` or ``"right"`` (the patient's).
    """

    __slots__ = ()

    def __new__(cls, label: str, level: str | None = None, side: str | None = None):
        return super().__new__(cls, (label, level, side))

    label = property(lambda self: self[0])
    level = property(lambda self: self[1])
    side = property(lambda self: self[2])

    def __str__(self) -> str:
        return format_label_name(self.label, self.level, self.side)


def format_label_name(label: str | Label, level: str | None = None, side: str | None = None) -> str:
    """The label-table name of a class at a level and side: ``("VERTEBRA", "L4")`` -> ``"vertebra_L4"``.

    Raises
    ------
    LabelMapError
        ``label`` not in the vocabulary, ``level`` not in :data:`VERTEBRAL_LEVELS`, ``side`` not in :data:`SIDES`.
    """
    parts = [_vocabulary_name(label).lower()]
    if level is not None:
        if level not in VERTEBRAL_LEVELS:
            raise LabelMapError(f"{level!r} is not a vertebral level ({VERTEBRAL_LEVELS[0]}..{VERTEBRAL_LEVELS[-1]})")
        parts.append(level)
    if side is not None:
        if side not in SIDES:
            raise LabelMapError(f"{side!r} is not a side (left or right)")
        parts.append(side)
    return "_".join(parts)


def parse_label_name(name: str | Label) -> LabelName:
    """Read a label-table name: a vocabulary name (any case), optionally ``_<level>`` then ``_<side>``.

    ``"vertebra_L4"`` -> ``LabelName("VERTEBRA", "L4", None)``; ``"TRANSVERSE_PROCESS_L4_left"``
    -> ``("TRANSVERSE_PROCESS", "L4", "left")``; ``"VERTEBRAL_BODY"`` -> ``("VERTEBRAL_BODY", None, None)``.
    Foreign names (``vertebrae_L4``) are not read here: see :func:`resolve_label_name`.

    Raises
    ------
    LabelMapError
        The name is not of that form (names the error and the vocabulary module).
    """
    if isinstance(name, Label):
        return LabelName(name.name)
    if not isinstance(name, str) or not name.strip():
        raise LabelMapError(f"{name!r} is not a label name (a name of the label vocabulary, workbench.anatomy.Label)")
    tokens = name.strip().split("_")
    side = level = None
    if len(tokens) > 1 and tokens[-1].lower() in SIDES:
        side = tokens.pop().lower()
    if len(tokens) > 1 and tokens[-1].upper() in VERTEBRAL_LEVELS:
        level = tokens.pop().upper()
    label = "_".join(tokens).upper()
    if label not in Label.__members__:
        raise LabelMapError(
            f"{name!r} is not a name of the label vocabulary (workbench.anatomy.Label), optionally with a level and side "
            "such as 'vertebra_L4' or 'transverse_process_L4_left'"
        )
    return LabelName(label, level, side)


def resolve_label_name(name: str) -> LabelName:
    """Like :func:`parse_label_name`, but a foreign name of :data:`FOREIGN_NAMES` is first translated.

    ``"vertebrae_L4"`` (TotalSegmentator) -> ``LabelName("VERTEBRA", "L4", None)``. A name that is
    neither is refused (:class:`LabelMapError`): never guessed.
    """
    if isinstance(name, str) and name.strip() in FOREIGN_NAMES:
        return parse_label_name(FOREIGN_NAMES[name.strip()])
    return parse_label_name(name)


#: The workbench encoding (value -> vocabulary name): the table of the phantom's label maps and
#: of the demo case's ``label_map`` attachment.
WORKBENCH_TABLE: Mapping[int, str] = MappingProxyType({int(label): label.name for label in Label})


def display_name(name: str | Label) -> str:
    """A vocabulary name for people: ``"TRANSVERSE_PROCESS"`` -> ``"transverse process"``."""
    return _vocabulary_name(name).lower().replace("_", " ")


def _vocabulary_name(name: str | Label) -> str:
    """The vocabulary name of a :class:`Label` member or a name; a bare int is refused (it needs a table)."""
    if isinstance(name, Label):
        return name.name
    if isinstance(name, str) and name in Label.__members__:
        return name
    raise LabelMapError(f"{name!r} is not a name of the label vocabulary (workbench.anatomy.Label)")


def _checked_table(table: Mapping[int, str]) -> dict[int, LabelName]:
    if not isinstance(table, Mapping) or not table:
        raise LabelMapError("a label table must be a non-empty mapping of int value -> vocabulary name")
    checked: dict[int, LabelName] = {}
    for value, name in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise LabelMapError(f"label table key {value!r} is not an integer label value")
        checked[int(value)] = parse_label_name(name)
    return checked


class LabelMap:
    """A label image in the ``Mri`` frame (LPS mm) with its label table.

    Parameters
    ----------
    image : SimpleITK.Image or (K, J, I) int array
        The label values. A 3D scalar integer image (its geometry is used), or an array indexed
        [k, j, i] as SimpleITK arrays are, with ``mri_voxel_to_mri`` giving its geometry.
    table : mapping of int to str
        Label value -> vocabulary name (a :class:`Label` member name), optionally with a
        vertebral level and side (``"vertebra_L4"``, ``"transverse_process_L4_left"``; see
        :func:`parse_label_name`). Several values may name the same class. :data:`WORKBENCH_TABLE`
        for the phantom's and the demo case's maps.
    mri_voxel_to_mri : (4, 4) float array or Transform, optional
        Voxel index (i, j, k) to LPS mm (``MriVoxelToMri``, docs/frames.md); required with an
        array, not allowed with an image (which carries its own).

    Attributes
    ----------
    array : (K, J, I) int array
        The label values.
    table : mapping of int to str
        Read-only label table: value -> vocabulary class name (level and side stripped).
    names : mapping of int to str
        Read-only: value -> label-table name with level and side (``"vertebra_L4"``), as
        :func:`format_label_name` writes it (what a ``.labels.json`` sidecar holds).
    levels, sides : mapping of int to str
        Read-only: the vertebral level / side of the values whose name carries one.
    mri_voxel_to_mri, mri_to_mri_voxel : Transform
        ``MriVoxelToMri`` and its inverse.
    spacing_mm : (3,) float array
        Voxel size along i, j, k, mm.

    Raises
    ------
    LabelMapError
        Not 3D, not integer, a table that is empty or names something outside the vocabulary,
        or missing (array) / duplicated (image) geometry.

    Examples
    --------
    >>> import numpy as np
    >>> values_kji = np.zeros((2, 2, 2), np.uint8)
    >>> values_kji[0, 0, 0] = 8
    >>> label_map = LabelMap(values_kji, {0: "AIR", 8: "VERTEBRAL_BODY"}, np.eye(4))
    >>> int(label_map.bone_mask().sum()), label_map.name_of(8)
    (1, 'VERTEBRAL_BODY')
    """

    def __init__(
        self,
        image: sitk.Image | np.ndarray,
        table: Mapping[int, str],
        mri_voxel_to_mri: np.ndarray | Transform | None = None,
    ):
        if isinstance(image, sitk.Image):
            if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
                raise LabelMapError(f"a label map must be a 3D scalar image, got {image.GetDimension()}D")
            if mri_voxel_to_mri is not None:
                raise LabelMapError("a label map image carries its own geometry: give no mri_voxel_to_mri")
            array = sitk.GetArrayFromImage(image)
            matrix = image_index_to_physical(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        else:
            array = np.asarray(image)
            if array.ndim != 3:
                raise LabelMapError(f"a label map must be 3D, got shape {array.shape}")
            if mri_voxel_to_mri is None:
                raise LabelMapError("a label map array needs its geometry: give mri_voxel_to_mri ((4, 4), MriVoxelToMri)")
            matrix = mri_voxel_to_mri.matrix if isinstance(mri_voxel_to_mri, Transform) else mri_voxel_to_mri
            if isinstance(mri_voxel_to_mri, Transform) and mri_voxel_to_mri.name != "MriVoxelToMri":
                raise LabelMapError(f"label map geometry must be MriVoxelToMri, got {mri_voxel_to_mri.name}")
        if not np.issubdtype(array.dtype, np.integer):
            raise LabelMapError(f"label values must be integers, got {array.dtype}")
        self._image = image if isinstance(image, sitk.Image) else None
        self.array = array
        parsed = _checked_table(table)
        self.table: Mapping[int, str] = MappingProxyType({value: name.label for value, name in parsed.items()})
        self.names: Mapping[int, str] = MappingProxyType({value: str(name) for value, name in parsed.items()})
        self.levels: Mapping[int, str] = MappingProxyType({v: n.level for v, n in parsed.items() if n.level is not None})
        self.sides: Mapping[int, str] = MappingProxyType({v: n.side for v, n in parsed.items() if n.side is not None})
        self.mri_voxel_to_mri = Transform(np.asarray(matrix, dtype=float), "MriVoxel", "Mri")
        self.mri_to_mri_voxel = self.mri_voxel_to_mri.inverse()
        self.spacing_mm = np.linalg.norm(self.mri_voxel_to_mri.matrix[:3, :3], axis=0)

    @classmethod
    def from_volume(cls, volume, table: Mapping[int, str]) -> "LabelMap":
        """From a :class:`~workbench.io.loaded_volume.LoadedVolume` (or anything with ``.image``) of labels."""
        return cls(volume.image, table)

    # -- the table ----------------------------------------------------------------------------
    def name_of(self, value: int) -> str:
        """The vocabulary name of one label value; :class:`LabelMapError` if the table lacks it."""
        try:
            return self.table[int(value)]
        except KeyError:
            raise LabelMapError(f"label value {int(value)} is not in this label map's table") from None

    def level_of(self, value: int) -> str | None:
        """The vertebral level of a label value (``"L4"``), None if its name carries none; unknown values raise."""
        self.name_of(value)
        return self.levels.get(int(value))

    def values_at_level(self, level: str) -> tuple[int, ...]:
        """The label values (sorted) whose name carries vertebral level ``level`` (``"L4"``)."""
        if level not in VERTEBRAL_LEVELS:
            raise LabelMapError(f"{level!r} is not a vertebral level ({VERTEBRAL_LEVELS[0]}..{VERTEBRAL_LEVELS[-1]})")
        return tuple(sorted(value for value, name in self.levels.items() if name == level))

    def values_of(self, names: Iterable[str | Label]) -> tuple[int, ...]:
        """The label values (sorted) whose vocabulary name is one of ``names``; () if the table has none.

        ``names`` are vocabulary names or :class:`Label` members; anything else (a typo, a bare
        int) raises :class:`LabelMapError`.
        """
        if isinstance(names, (str, Label)):
            names = (names,)
        wanted = {_vocabulary_name(name) for name in names}
        return tuple(sorted(value for value, name in self.table.items() if name in wanted))

    def mask(self, names: Iterable[str | Label], values: np.ndarray | None = None) -> np.ndarray:
        """Bool array: where the label is one of ``names``.

        Parameters
        ----------
        names : iterable of str or Label
        values : int array, optional
            Label values of this map (a crop, samples along a path); default the whole
            :attr:`array` ((K, J, I)).
        """
        return np.isin(self.array if values is None else values, self.values_of(names))

    def bone_mask(self, values: np.ndarray | None = None) -> np.ndarray:
        """Bool array: where the label is bone (:data:`BONE_NAMES`); see :meth:`mask`."""
        return self.mask(sorted(BONE_NAMES), values)

    def unknown_values(self) -> tuple[int, ...]:
        """Values present in :attr:`array` that the table does not name (sorted)."""
        return tuple(int(v) for v in np.unique(self.array) if int(v) not in self.table)

    def check_values(self) -> "LabelMap":
        """Return self if every value in the image is in the table, else raise :class:`LabelMapError`."""
        unknown = self.unknown_values()
        if unknown:
            raise LabelMapError(
                "label map holds values that are not in its table: " + ", ".join(str(v) for v in unknown[:10])
            )
        return self

    # -- geometry -----------------------------------------------------------------------------
    @property
    def image(self) -> sitk.Image:
        """The labels as a SimpleITK image in LPS mm (the one given, or built from the array)."""
        if self._image is None:
            image = sitk.GetImageFromArray(self.array)
            linear = self.mri_voxel_to_mri.matrix[:3, :3]
            image.SetSpacing([float(v) for v in self.spacing_mm])
            image.SetDirection([float(v) for v in (linear / self.spacing_mm).ravel()])
            image.SetOrigin([float(v) for v in self.mri_voxel_to_mri.matrix[:3, 3]])
            self._image = image
        return self._image

    @property
    def half_voxel_diagonal_mm(self) -> float:
        """Half the diagonal of one voxel, mm."""
        return float(np.linalg.norm(self.spacing_mm) / 2.0)

    def to_ijk(self, points_mri: np.ndarray) -> np.ndarray:
        """(N, 3) continuous voxel indices (i, j, k) of (N, 3) positions in ``Mri`` (LPS mm)."""
        return apply_affine(self.mri_to_mri_voxel.matrix, np.asarray(points_mri, dtype=float))

    def values_at(self, points_mri: np.ndarray) -> np.ndarray:
        """(N,) label values at (N, 3) ``Mri`` positions, mm (nearest voxel; -1 outside the map)."""
        ijk = np.rint(self.to_ijk(points_mri)).astype(int)
        shape_ijk = np.array(self.array.shape[::-1])
        inside = np.all((ijk >= 0) & (ijk < shape_ijk), axis=1)
        out = np.full(len(ijk), -1, dtype=int)
        out[inside] = self.array[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
        return out

    def crop(self, lo_mri: np.ndarray, hi_mri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label values of the box ``lo_mri..hi_mri`` (LPS mm), (k, j, i) indexed, and the (i, j, k) of its first voxel."""
        corners_mri = np.array(
            [[x, y, z] for x in (lo_mri[0], hi_mri[0]) for y in (lo_mri[1], hi_mri[1]) for z in (lo_mri[2], hi_mri[2])]
        )
        corners_ijk = self.to_ijk(corners_mri)
        shape_ijk = np.array(self.array.shape[::-1])
        lo_ijk = np.clip(np.floor(corners_ijk.min(axis=0)).astype(int), 0, shape_ijk)
        hi_ijk = np.clip(np.ceil(corners_ijk.max(axis=0)).astype(int) + 1, 0, shape_ijk)
        return self.array[lo_ijk[2] : hi_ijk[2], lo_ijk[1] : hi_ijk[1], lo_ijk[0] : hi_ijk[0]], lo_ijk

    def __repr__(self) -> str:
        return f"LabelMap({'x'.join(str(n) for n in self.array.shape[::-1])} voxels, {len(self.table)} table entries)"
