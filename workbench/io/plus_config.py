"""PLUS device-set XML (``<PlusConfiguration>``): calibrations and volume reconstruction settings.

A device set holds, among much else that workbench does not need, the
``<CoordinateDefinitions>`` of fixed transforms (above all the ultrasound calibration
``ImageToProbe``, whose 3x3 part carries the pixel-to-mm scale) and a
``<VolumeReconstruction>`` element with the settings of PLUS's volume reconstructor.
:func:`read_device_set` turns both into typed, frozen objects; every attribute that is
absent gets the value PLUS itself uses (PLUS ``AlgorithmVolumeReconstruction`` and
``vtkPlusVolumeReconstructor::ReadConfiguration``), so a config means here what it
means in PLUS.

Frames and the matrix convention are those of PLUS and workbench: see docs/frames.md.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn
from xml.parsers import expat

import numpy as np

from workbench.errors import DeviceSetError, FrameError
from workbench.frames import Transform, TransformRepository
from workbench.io.paths import refuse_special_file
from workbench.validation import check_affine, check_coordinates_mm, check_int_range, check_size, check_spacing_mm

__all__ = [
    "COMPOUNDING_MODES",
    "HOLE_FILLING_TYPES",
    "INTERPOLATION_MODES",
    "OPTIMIZATION_MODES",
    "CoordinateDefinition",
    "DeviceSet",
    "DeviceSummary",
    "HoleFillingElement",
    "VolumeReconstructionConfig",
    "describe_device_set",
    "read_device_set",
]

INTERPOLATION_MODES = ("NEAREST_NEIGHBOR", "LINEAR")
OPTIMIZATION_MODES = ("FULL", "PARTIAL", "NONE")
# PLUS spells the importance-mask mode without an underscore.
COMPOUNDING_MODES = ("MEAN", "LATEST", "MAXIMUM", "IMPORTANCEMASK")
HOLE_FILLING_TYPES = ("GAUSSIAN", "GAUSSIAN_ACCUMULATION", "STICK", "NEAREST_NEIGHBOR", "DISTANCE_WEIGHT_INVERSE")

# Deprecated (PLUS 2014) attributes that still decide CompoundingMode when it is absent.
_LEGACY_COMPOUNDING = ("ON", "OFF")
_LEGACY_CALCULATION = ("WEIGHTED_AVERAGE", "MAXIMUM")

_KERNEL_ATTRIBUTES = ("Size", "MinimumKnownVoxelsRatio")
_HOLE_FILLING_REQUIRED = {
    "GAUSSIAN": (*_KERNEL_ATTRIBUTES, "Stdev"),
    "GAUSSIAN_ACCUMULATION": (*_KERNEL_ATTRIBUTES, "Stdev"),
    "NEAREST_NEIGHBOR": _KERNEL_ATTRIBUTES,
    "DISTANCE_WEIGHT_INVERSE": _KERNEL_ATTRIBUTES,
    "STICK": ("StickLengthLimit", "NumberOfSticksToUse"),
}

_LAST_ROW = (0.0, 0.0, 0.0, 1.0)
#: largest device-set file read (PLUS's are a few kB)
MAX_DEVICE_SET_BYTES = 16 << 20
#: largest pixel coordinate or size in a VolumeReconstruction attribute (images are a few thousand pixels wide)
MAX_PIXEL_COORDINATE = 100_000.0
#: largest hole-filling kernel or stick (voxels); PLUS's examples use 3 to 9
MAX_KERNEL_SIZE = 63
_MAX_INT_ATTRIBUTE = 10**9


@dataclass(frozen=True)
class CoordinateDefinition:
    """One ``<Transform>`` of ``<CoordinateDefinitions>``.

    Attributes
    ----------
    transform : Transform
        The fixed transform, e.g. ``ImageToProbe`` (pixels to mm). See docs/frames.md.
    error : float or None
        The ``Error`` attribute as written (for calibrations: RMS error, mm), None if absent.
    date : str or None
        The ``Date`` attribute as written (PLUS uses several formats, e.g. ``"022312_110631"``).
    persistent : bool
        The ``Persistent`` attribute; PLUS treats an absent one as TRUE.
    """

    transform: Transform
    error: float | None = None
    date: str | None = None
    persistent: bool = True

    @property
    def name(self) -> str:
        """``FromToTo`` name, e.g. ``"ImageToProbe"``."""
        return self.transform.name

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """(x, y) size of one image pixel in mm, for transforms from an ``Image*`` frame.

        The column norms of the first two columns of the 3x3 part: the length in the
        target frame of one pixel step along the image x (column) and y (row) axes.
        None for transforms that do not start in an image frame or that end in a
        pixel frame (PLUS names those ``...Pixel``, e.g. ``TransducerOriginPixel``).
        """
        t = self.transform
        if not t.from_frame.startswith("Image") or t.to_frame.endswith("Pixel"):
            return None
        spacing_x, spacing_y, _ = t.scale
        return float(spacing_x), float(spacing_y)


@dataclass(frozen=True)
class HoleFillingElement:
    """One ``<HoleFillingElement>``: a method tried, in order, on voxels left empty.

    Attributes
    ----------
    type : str
        One of :data:`HOLE_FILLING_TYPES`.
    size : int or None
        Diameter of the largest kernel, voxels (odd); kernel types only.
    stdev : float or None
        Standard deviation of the Gaussian weight, voxels; Gaussian types only.
    minimum_known_voxels_ratio : float or None
        Fraction (0..1) of the kernel that must be filled to fill the hole; kernel types only.
    stick_length_limit : int or None
        Longest stick, voxels; ``STICK`` only.
    number_of_sticks_to_use : int or None
        Number of sticks averaged; ``STICK`` only.
    """

    type: str
    size: int | None = None
    stdev: float | None = None
    minimum_known_voxels_ratio: float | None = None
    stick_length_limit: int | None = None
    number_of_sticks_to_use: int | None = None


@dataclass(frozen=True)
class VolumeReconstructionConfig:
    """The ``<VolumeReconstruction>`` element, with PLUS's defaults for absent attributes.

    Pixel quantities (``*_px``) are in the MF-oriented image (PLUS clips in MF); the
    output grid is in ``reference_coordinate_frame`` (mm). See docs/frames.md.

    Attributes
    ----------
    output_spacing_mm : (3,) tuple of float
        Voxel size of the reconstructed volume (required in PLUS).
    output_origin_mm : (3,) tuple of float
        Position of voxel (0, 0, 0) in the reference frame; default ``(0, 0, 0)``.
    output_extent : (6,) tuple of int or None
        ``i0 i1 j0 j1 k0 k1`` voxel index bounds; None: PLUS fits it to the frames.
    reference_coordinate_frame, image_coordinate_frame : str or None
        PLUS has no default: when absent the names come from elsewhere (the
        VolumeReconstructor's ``--image-to-reference-transform``); see
        :attr:`image_to_reference_name`.
    clip_rectangle_origin_px, clip_rectangle_size_px : (2,) tuple of int
        Default ``(0, 0)``; a zero size means the whole frame.
    fan_angles_deg : (2,) tuple of float
        Edges of the fan; ``(0, 0)`` (default) means no fan clipping.
    fan_origin_px : (2,) tuple of float
        Apex of the fan; default ``(0, 0)``.
    fan_radius_start_px, fan_radius_stop_px : float
        Fan depth range; defaults 0 and 500.
    enable_fan_angles_auto_detect : bool
        Default False.
    fan_angles_auto_detect_brightness_threshold : float
        Default 30.
    fan_angles_auto_detect_filter_radius_px : int
        Default 10.
    pixel_rejection_threshold : float or None
        Pixels darker than this are not pasted; None (default) disables rejection.
    skip_interval : int
        Use every n-th frame; default 1 (PLUS raises values below 1 to 1).
    interpolation : str
        ``"NEAREST_NEIGHBOR"`` (default) or ``"LINEAR"``.
    optimization : str
        ``"FULL"`` (default), ``"PARTIAL"`` or ``"NONE"``.
    compounding_mode : str
        ``"MEAN"`` (default), ``"LATEST"``, ``"MAXIMUM"`` or ``"IMPORTANCEMASK"``. When the
        attribute is absent the deprecated ``Calculation="MAXIMUM"`` gives MAXIMUM and
        ``Compounding="OFF"`` gives LATEST, as in PLUS.
    number_of_threads : int
        0 (default) means one per processor.
    importance_mask_filename : str or None
        ``ImportanceMaskFilename``; required by PLUS for IMPORTANCEMASK compounding.
    fill_holes : bool
        ``FillHoles="ON"``; default False.
    hole_filling_elements : tuple of HoleFillingElement
        Read only when ``fill_holes`` (as PLUS does).
    """

    output_spacing_mm: tuple[float, float, float]
    output_origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    output_extent: tuple[int, int, int, int, int, int] | None = None
    reference_coordinate_frame: str | None = None
    image_coordinate_frame: str | None = None
    clip_rectangle_origin_px: tuple[int, int] = (0, 0)
    clip_rectangle_size_px: tuple[int, int] = (0, 0)
    fan_angles_deg: tuple[float, float] = (0.0, 0.0)
    fan_origin_px: tuple[float, float] = (0.0, 0.0)
    fan_radius_start_px: float = 0.0
    fan_radius_stop_px: float = 500.0
    enable_fan_angles_auto_detect: bool = False
    fan_angles_auto_detect_brightness_threshold: float = 30.0
    fan_angles_auto_detect_filter_radius_px: int = 10
    pixel_rejection_threshold: float | None = None
    skip_interval: int = 1
    interpolation: str = "NEAREST_NEIGHBOR"
    optimization: str = "FULL"
    compounding_mode: str = "MEAN"
    number_of_threads: int = 0
    importance_mask_filename: str | None = None
    fill_holes: bool = False
    hole_filling_elements: tuple[HoleFillingElement, ...] = ()

    @property
    def fan_clipping_applied(self) -> bool:
        """True if a fan is clipped (PLUS: either fan angle is non-zero)."""
        return any(angle != 0.0 for angle in self.fan_angles_deg)

    @property
    def image_to_reference_name(self) -> str:
        """Name of the slice pose transform; ``Image``/``Reference`` stand in for absent frames.

        The stand-ins are what PLUS's own reconstruction tests pass on the command line
        (``--image-to-reference-transform=ImageToReference``).
        """
        return f"{self.image_coordinate_frame or 'Image'}To{self.reference_coordinate_frame or 'Reference'}"

    def to_dict(self) -> dict:
        """All fields as a JSON-ready dict (tuples become lists)."""
        return _json_ready(asdict(self))


@dataclass(frozen=True)
class DeviceSummary:
    """Just enough of a ``<Device>`` to say what it is.

    Attributes
    ----------
    device_id, device_type : str
        ``Id`` and ``Type`` attributes (e.g. ``"TrackerDevice"``, ``"Ascension3DG"``).
    data_sources : tuple of (id, type) pairs
        The ``<DataSources>`` it provides, e.g. ``("Probe", "Tool")``, ``("Video", "Video")``.
    input_channel_ids, output_channel_ids : tuple of str
        Channels it reads and writes.
    """

    device_id: str
    device_type: str
    data_sources: tuple[tuple[str, str], ...] = ()
    input_channel_ids: tuple[str, ...] = ()
    output_channel_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "id": self.device_id,
            "type": self.device_type,
            "data_sources": [{"id": ds_id, "type": ds_type} for ds_id, ds_type in self.data_sources],
            "input_channels": list(self.input_channel_ids),
            "output_channels": list(self.output_channel_ids),
        }


@dataclass(frozen=True)
class DeviceSet:
    """What workbench reads from a PLUS device-set XML.

    Attributes
    ----------
    source_path : Path
        The file read.
    name, description : str or None
        From ``<DataCollection><DeviceSet Name=... Description=...>``.
    coordinate_definitions : tuple of CoordinateDefinition
        In file order.
    volume_reconstruction : VolumeReconstructionConfig or None
        The first ``<VolumeReconstruction>`` element anywhere in the file (top level or
        inside a ``VirtualVolumeReconstructor`` device), None if there is none.
    devices : tuple of DeviceSummary
        The ``<DataCollection>`` devices in file order.
    """

    source_path: Path
    name: str | None
    description: str | None
    coordinate_definitions: tuple[CoordinateDefinition, ...]
    volume_reconstruction: VolumeReconstructionConfig | None
    devices: tuple[DeviceSummary, ...]

    def transform_repository(self) -> TransformRepository:
        """A new :class:`~workbench.frames.TransformRepository` holding every coordinate definition."""
        repository = TransformRepository()
        for definition in self.coordinate_definitions:
            repository.set_transform(definition.transform)
        return repository

    def image_to_probe(self) -> Transform:
        """The ultrasound calibration ``ImageToProbe`` (pixels to mm; see docs/frames.md).

        Raises
        ------
        DeviceSetError
            If the coordinate definitions do not connect ``Image`` to ``Probe``.
        """
        try:
            return self.transform_repository().get("ImageToProbe")
        except FrameError:
            raise DeviceSetError(
                "device set has no ImageToProbe calibration in CoordinateDefinitions", self.source_path
            ) from None


def read_device_set(path: str | Path) -> DeviceSet:
    """Read a PLUS device-set XML file.

    Parameters
    ----------
    path : str or Path
        A ``PlusDeviceSet_*.xml`` file.

    Returns
    -------
    DeviceSet

    Raises
    ------
    DeviceSetError
        If the file is missing, not well-formed XML, not a ``PlusConfiguration``, or a
        transform or VolumeReconstruction attribute is malformed.
    """
    path = Path(path)
    root = _parse_root(path)
    collection_info = root.find("DataCollection/DeviceSet")
    reconstruction = root.find(".//VolumeReconstruction")
    return DeviceSet(
        source_path=path,
        name=None if collection_info is None else collection_info.get("Name"),
        description=None if collection_info is None else collection_info.get("Description"),
        coordinate_definitions=_read_coordinate_definitions(root, path),
        volume_reconstruction=None if reconstruction is None else _read_volume_reconstruction(reconstruction, path),
        devices=tuple(_summarize_device(device) for device in root.findall("DataCollection/Device")),
    )


def describe_device_set(path: str | Path) -> dict:
    """Describe a device set for ``workbench info`` (``kind`` = ``"device_set"``); JSON-ready."""
    device_set = read_device_set(path)
    return {
        "kind": "device_set",
        "path": str(device_set.source_path),
        "name": device_set.name,
        "description": device_set.description,
        "coordinate_definitions": [_describe_definition(d) for d in device_set.coordinate_definitions],
        "volume_reconstruction": (
            None if device_set.volume_reconstruction is None else device_set.volume_reconstruction.to_dict()
        ),
        "devices": [device.to_dict() for device in device_set.devices],
    }


# -- parsing ----------------------------------------------------------------------


def _parse_root(path: Path) -> ET.Element:
    refuse_special_file(path, DeviceSetError)  # a FIFO or device would block the parser
    try:
        if path.stat().st_size > MAX_DEVICE_SET_BYTES:
            raise DeviceSetError(f"file is larger than {MAX_DEVICE_SET_BYTES >> 20} MiB; not a device set", path)
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DeviceSetError("file not found", path) from None
    except OSError as exc:
        raise DeviceSetError(f"cannot read the file ({exc.strerror or exc})", path) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise DeviceSetError(
            f"not well-formed XML at line {line}, column {column}: {expat.ErrorString(exc.code)}", path
        ) from None
    except (LookupError, ValueError) as exc:  # unknown or multi-byte encoding in the XML declaration
        raise DeviceSetError(f"cannot decode the XML ({str(exc)[:80]}); device sets are UTF-8 or ASCII", path) from None
    except RecursionError:
        raise DeviceSetError("XML nests too deeply", path) from None
    if root.tag != "PlusConfiguration":
        raise DeviceSetError(f"root element is <{root.tag}>, expected <PlusConfiguration>", path)
    return root


def _read_coordinate_definitions(root: ET.Element, path: Path) -> tuple[CoordinateDefinition, ...]:
    definitions = [_read_transform(element, path) for element in root.findall("CoordinateDefinitions/Transform")]
    seen: set[frozenset[str]] = set()
    for definition in definitions:
        frames = frozenset((definition.transform.from_frame, definition.transform.to_frame))
        if frames in seen:
            raise DeviceSetError(
                f"CoordinateDefinitions defines the transform between {' and '.join(sorted(frames))} twice", path
            )
        seen.add(frames)
    return tuple(definitions)


def _read_transform(element: ET.Element, path: Path) -> CoordinateDefinition:
    from_frame, to_frame = element.get("From"), element.get("To")
    if not from_frame or not to_frame:
        raise DeviceSetError("a CoordinateDefinitions Transform lacks its From or To attribute", path)
    label = f"Transform From={from_frame!r} To={to_frame!r}"
    for frame in (from_frame, to_frame):
        if "To" in frame:
            raise DeviceSetError(f"{label}: frame name {frame!r} contains 'To', which makes names ambiguous", path)
    attributes = _Attributes(element, path, label)
    matrix = _parse_matrix(element.get("Matrix"), label, path)
    try:
        transform = Transform(matrix, from_frame, to_frame)
    except FrameError as exc:
        raise DeviceSetError(f"{label}: {exc.problem}", path) from None
    return CoordinateDefinition(
        transform=transform,
        error=attributes.number("Error"),
        date=element.get("Date"),
        persistent=attributes.switch("Persistent", "TRUE", "FALSE", default=True),
    )


def _parse_matrix(text: str | None, label: str, path: Path) -> np.ndarray:
    if text is None:
        raise DeviceSetError(f"{label} has no Matrix attribute", path)
    tokens = text.split()
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        bad = next(token for token in tokens if not _is_float(token))
        raise DeviceSetError(f"{label} Matrix has a non-numeric value {bad!r}", path) from None
    if len(values) != 16:
        raise DeviceSetError(f"{label} Matrix has {len(values)} numbers, expected 16", path)
    if not all(math.isfinite(v) for v in values):
        raise DeviceSetError(f"{label} Matrix contains NaN or infinity", path)
    if tuple(values[12:]) != _LAST_ROW:
        row = " ".join(tokens[12:])
        raise DeviceSetError(f"{label} Matrix last row is '{row}', expected '0 0 0 1'", path)
    return check_affine(np.array(values).reshape(4, 4), f"{label} Matrix", path, DeviceSetError)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_volume_reconstruction(element: ET.Element, path: Path) -> VolumeReconstructionConfig:
    attributes = _Attributes(element, path, "VolumeReconstruction")
    spacing_mm = attributes.numbers("OutputSpacing", 3)
    if spacing_mm is None:
        attributes.fail("OutputSpacing", "is required but absent")
    if any(value <= 0 for value in spacing_mm):
        attributes.fail("OutputSpacing", f"must be 3 positive numbers, got {element.get('OutputSpacing')!r}")
    check_spacing_mm(spacing_mm, "VolumeReconstruction OutputSpacing", path, DeviceSetError)
    output_origin_mm = attributes.numbers("OutputOrigin", 3, default=(0.0, 0.0, 0.0))
    check_coordinates_mm(output_origin_mm, "VolumeReconstruction OutputOrigin", path, DeviceSetError)
    output_extent = attributes.numbers("OutputExtent", 6, int)
    if output_extent is not None:
        sizes = [output_extent[1] - output_extent[0] + 1, output_extent[3] - output_extent[2] + 1,
                 output_extent[5] - output_extent[4] + 1]  # fmt: skip
        check_size(sizes, "VolumeReconstruction OutputExtent", path, DeviceSetError, bytes_per_element=3)
    compounding_mode = _compounding_mode(attributes)
    importance_mask = element.get("ImportanceMaskFilename")
    if compounding_mode == "IMPORTANCEMASK" and not importance_mask:
        attributes.fail("ImportanceMaskFilename", "is required when CompoundingMode is IMPORTANCEMASK")
    fill_holes = attributes.switch("FillHoles", "ON", "OFF", default=False)
    for name in ("FanOriginPixel", "FanRadiusStartPixel", "FanRadiusStopPixel", "ClipRectangleOrigin", "ClipRectangleSize"):
        values = element.get(name)
        if values is not None and any(_is_float(v) and abs(float(v)) > MAX_PIXEL_COORDINATE for v in values.split()):
            attributes.fail(name, f"holds a value beyond {MAX_PIXEL_COORDINATE:g} pixels, got {values[:60]!r}")
    fan_angles = element.get("FanAnglesDeg")
    if fan_angles is not None and any(_is_float(v) and abs(float(v)) > 180.0 for v in fan_angles.split()):
        attributes.fail("FanAnglesDeg", f"holds an angle beyond +-180 deg, got {fan_angles[:60]!r}")
    return VolumeReconstructionConfig(
        output_spacing_mm=spacing_mm,
        output_origin_mm=output_origin_mm,
        output_extent=output_extent,
        reference_coordinate_frame=element.get("ReferenceCoordinateFrame"),
        image_coordinate_frame=element.get("ImageCoordinateFrame"),
        clip_rectangle_origin_px=attributes.numbers("ClipRectangleOrigin", 2, int, default=(0, 0)),
        clip_rectangle_size_px=attributes.numbers("ClipRectangleSize", 2, int, default=(0, 0)),
        fan_angles_deg=attributes.numbers("FanAnglesDeg", 2, default=(0.0, 0.0)),
        fan_origin_px=attributes.numbers("FanOriginPixel", 2, default=(0.0, 0.0)),
        fan_radius_start_px=attributes.number("FanRadiusStartPixel", default=0.0),
        fan_radius_stop_px=attributes.number("FanRadiusStopPixel", default=500.0),
        enable_fan_angles_auto_detect=attributes.switch("EnableFanAnglesAutoDetect", "TRUE", "FALSE", default=False),
        fan_angles_auto_detect_brightness_threshold=attributes.number(
            "FanAnglesAutoDetectBrightnessThreshold", default=30.0
        ),
        fan_angles_auto_detect_filter_radius_px=attributes.number(
            "FanAnglesAutoDetectFilterRadiusPixel", int, default=10
        ),
        pixel_rejection_threshold=attributes.number("PixelRejectionThreshold"),
        skip_interval=_skip_interval(attributes),
        interpolation=attributes.enum("Interpolation", INTERPOLATION_MODES, default="NEAREST_NEIGHBOR"),
        optimization=attributes.enum("Optimization", OPTIMIZATION_MODES, default="FULL"),
        compounding_mode=compounding_mode,
        number_of_threads=attributes.number("NumberOfThreads", int, default=0),
        importance_mask_filename=importance_mask,
        fill_holes=fill_holes,
        hole_filling_elements=_read_hole_filling(element, path) if fill_holes else (),
    )


def _compounding_mode(attributes: "_Attributes") -> str:
    """CompoundingMode, or what PLUS derives from the deprecated Calculation/Compounding."""
    mode = attributes.enum("CompoundingMode", COMPOUNDING_MODES, default=None)
    calculation = attributes.enum("Calculation", _LEGACY_CALCULATION, default=None)
    compounding = attributes.enum("Compounding", _LEGACY_COMPOUNDING, default=None)
    if mode is not None:
        return mode
    if calculation == "MAXIMUM":
        return "MAXIMUM"
    return "LATEST" if compounding == "OFF" else "MEAN"


def _skip_interval(attributes: "_Attributes") -> int:
    skip_interval = attributes.number("SkipInterval", int, default=1)
    if skip_interval < 1:
        warnings.warn(f"VolumeReconstruction SkipInterval {skip_interval} is below 1; using 1 as PLUS does", stacklevel=3)
        return 1
    return skip_interval


def _read_hole_filling(element: ET.Element, path: Path) -> tuple[HoleFillingElement, ...]:
    hole_filling = element.find("HoleFilling")
    if hole_filling is None:
        raise DeviceSetError("VolumeReconstruction has FillHoles ON but no HoleFilling element", path)
    return tuple(_read_hole_filling_element(item, path) for item in hole_filling.findall("HoleFillingElement"))


def _read_hole_filling_element(element: ET.Element, path: Path) -> HoleFillingElement:
    attributes = _Attributes(element, path, "HoleFillingElement")
    kind = attributes.enum("Type", HOLE_FILLING_TYPES, default=None)
    if kind is None:
        attributes.fail("Type", f"is required; allowed values: {', '.join(HOLE_FILLING_TYPES)}")
    for required in _HOLE_FILLING_REQUIRED[kind]:
        if element.get(required) is None:
            attributes.fail(required, f"is required for Type {kind}")
    element_read = HoleFillingElement(
        type=kind,
        size=attributes.number("Size", int),
        stdev=attributes.number("Stdev"),
        minimum_known_voxels_ratio=attributes.number("MinimumKnownVoxelsRatio"),
        stick_length_limit=attributes.number("StickLengthLimit", int),
        number_of_sticks_to_use=attributes.number("NumberOfSticksToUse", int),
    )
    # kernels and sticks are voxel counts: beyond these no reconstruction uses them, and a
    # kernel of n voxels costs n^3 work per hole
    for name, value, low, high in (
        ("Size", element_read.size, 1, MAX_KERNEL_SIZE),
        ("StickLengthLimit", element_read.stick_length_limit, 1, MAX_KERNEL_SIZE),
        ("NumberOfSticksToUse", element_read.number_of_sticks_to_use, 1, 13),
    ):
        if value is not None:
            check_int_range(value, low, high, f"HoleFillingElement {name}", path, DeviceSetError)
    for name, value, low, high in (
        ("Stdev", element_read.stdev, 1e-3, float(MAX_KERNEL_SIZE)),
        ("MinimumKnownVoxelsRatio", element_read.minimum_known_voxels_ratio, 0.0, 1.0),
    ):
        if value is not None and not low <= value <= high:
            attributes.fail(name, f"is {value:g}, outside {low:g}..{high:g}")
    return element_read


def _summarize_device(element: ET.Element) -> DeviceSummary:
    return DeviceSummary(
        device_id=element.get("Id", ""),
        device_type=element.get("Type", ""),
        data_sources=tuple(
            (source.get("Id", ""), source.get("Type", "")) for source in element.findall("DataSources/DataSource")
        ),
        input_channel_ids=tuple(c.get("Id", "") for c in element.findall("InputChannels/InputChannel")),
        output_channel_ids=tuple(c.get("Id", "") for c in element.findall("OutputChannels/OutputChannel")),
    )


def _describe_definition(definition: CoordinateDefinition) -> dict:
    spacing_mm = definition.pixel_spacing_mm
    return {
        "name": definition.name,
        "from_frame": definition.transform.from_frame,
        "to_frame": definition.transform.to_frame,
        "error": definition.error,
        "date": definition.date,
        "persistent": definition.persistent,
        "pixel_spacing_mm": None if spacing_mm is None else list(spacing_mm),
        "is_rigid": definition.transform.is_rigid(),
        "matrix": definition.transform.to_list(),
    }


def _count_phrase(count: int, noun: str) -> str:
    """``"a number"``, ``"an integer"``, ``"3 numbers"``."""
    if count == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    return f"{count} {noun}s"


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


class _Attributes:
    """Typed reading of one element's attributes; errors name the element and the attribute."""

    def __init__(self, element: ET.Element, path: Path, label: str):
        self._element = element
        self._path = path
        self._label = label

    def fail(self, name: str, problem: str) -> NoReturn:
        raise DeviceSetError(f"{self._label} {name} {problem}", self._path)

    def numbers(self, name: str, count: int, kind: type = float, default: tuple | None = None) -> tuple | None:
        """``count`` space-separated numbers of type ``kind``, or ``default`` if absent."""
        raw = self._element.get(name)
        if raw is None:
            return default
        what = _count_phrase(count, "integer" if kind is int else "number")
        tokens = raw.split()
        if len(tokens) != count:
            self.fail(name, f"must be {what}, got {raw[:60]!r}")
        try:
            values = tuple(kind(token) for token in tokens)
        except ValueError:
            self.fail(name, f"must be {what}, got {raw[:60]!r}")
        if kind is int and any(abs(v) > _MAX_INT_ATTRIBUTE for v in values):
            self.fail(name, f"holds an integer beyond {_MAX_INT_ATTRIBUTE:g}, got {raw[:60]!r}")
        if len(values) != count:
            self.fail(name, f"must be {what}, got {raw!r}")
        if not all(math.isfinite(v) for v in values):
            self.fail(name, f"must be finite, got {raw!r}")
        return values

    def number(self, name: str, kind: type = float, default: float | int | None = None):
        """One number of type ``kind``, or ``default`` if absent."""
        values = self.numbers(name, 1, kind)
        return default if values is None else values[0]

    def enum(self, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        """One of ``allowed`` (matched case-insensitively, as PLUS does), or ``default`` if absent."""
        raw = self._element.get(name)
        if raw is None:
            return default
        value = raw.strip().upper()
        if value not in allowed:
            self.fail(name, f"is {raw!r}; allowed values: {', '.join(allowed)}")
        return value

    def switch(self, name: str, on: str, off: str, default: bool) -> bool:
        """A two-word flag such as ``ON``/``OFF`` or ``TRUE``/``FALSE``."""
        return self.enum(name, (on, off), on if default else off) == on
