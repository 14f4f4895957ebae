"""B-mode ultrasound frames simulated from a phantom label map with a scan-line model.

Each scan line of the probe (fan lines of a curvilinear probe, parallel lines of a linear one) is
sampled through the label map in the ``Image`` plane placed by ``ImageToMri``. Along a line the
tissue classes give acoustic impedance, attenuation and backscatter (``labels.TISSUE``); from them:

1. at each label change, the pressure reflection coefficient ``r = (Z2 - Z1) / (Z2 + Z1)``
   (specular echo of amplitude ``|r| cos^2(incidence)``, the interface orientation measured in
   the image plane) and the two-way transmission ``1 - r^2`` of everything deeper;
2. entering bone, a further loss :data:`CORTEX_TRANSMISSION` (absorption and scattering in the
   cortex), then bone's own attenuation: together the acoustic shadow beneath bone;
3. attenuation ``exp(-2 alpha f depth)`` (alpha per tissue, dB/(cm MHz) converted to nepers);
4. diffuse scattering: complex Gaussian scatterers (Rayleigh-distributed envelope) scaled by
   the tissue's backscatter, raised in muscle by its fat fraction (fatty muscle is echogenic)
   and modulated in muscle by a fibre texture fixed to the anatomy (fascicles along z);
5. the point-spread function: Gaussian pulse envelope along the line and Gaussian beam across
   lines (the baseband picture of a Gaussian-modulated pulse), then envelope detection;
6. electronic noise, time-gain compensation (:data:`TGC_DB_CM_MHZ`, less than tissue
   attenuation, so deep tissue still darkens), log compression to the probe's dynamic range
   and 8 bit, and scan conversion onto the pixel grid (pixels outside the fan are 0).

Geometry is exact: line samples sit at known ``Image`` pixel positions, labels are looked up at
``image_to_lps`` of those positions, and the frame's pixel ``(column, row)`` shows what lies at
``image_to_lps @ (column, row, 0)``. By default the speed of sound is 1540 m/s everywhere (no
refraction or speed-of-sound displacement), and the incidence angle is measured in the image
plane only. See docs/ultrasound-simulation.md and docs/frames.md.

Error sources (off by default; :mod:`workbench.phantom.error_model` documents ranges and sources):
``tissue_speeds`` draws an echo from true path length ``s`` at the depth the scanner's 1540 m/s
gives, ``integral_0^s 1540 / c(s') ds'``, with ``c`` each tissue's speed (``TISSUE``) times
``speed_scale``; ``elevation_fwhm_mm`` sums three planes across the beam; ``reverberation_gain``
(the transducer face's reflection) repeats superficial echoes at two and three times their depth,
scaled by their own reflection; ``bone_dropout`` removes the bone echo on patches of the surface.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from workbench.anatomy import BONE_LABELS, Label
from workbench.errors import FrameError, PhantomError, VolumeError
from workbench.frames import Transform
from workbench.phantom.labels import TISSUE

__all__ = [
    "CURVILINEAR_C5_2",
    "LINEAR_L14_5",
    "PROBE_KINDS",
    "ProbeModel",
    "UltrasoundSimulator",
    "acoustic_tables",
    "anatomical_textures",
    "point_spread",
    "rotation_matrices",
    "scan_geometry",
    "simulate_frame",
]

PROBE_KINDS = ("curvilinear", "linear")
#: Speed of sound assumed by the scanner, m/s (= mm/us).
SPEED_OF_SOUND_MM_US = 1.54
#: Diffuse echo amplitude (RMS) of a tissue with backscatter 1, relative to a specular echo of
#: reflection coefficient 1. Sets soft tissue some 30-40 dB below a bone surface, as on scanners.
SCATTER_AMPLITUDE = 0.06
#: Two-way amplitude transmission of the bone cortex on top of the impedance step (-40 dB):
#: lumbar cortex absorbs and scatters nearly everything, leaving a shadow even under thin bone.
CORTEX_TRANSMISSION = 0.01
#: Time-gain compensation, dB/(cm MHz) one way; below soft-tissue attenuation (0.6-1.1), as a
#: sonographer sets it, so depth still darkens a little.
TGC_DB_CM_MHZ = 0.7
#: Overall receive gain, dB: superficial muscle shows at about 140 of 255 (55 dB dynamic range).
SYSTEM_GAIN_DB = 16.0
#: RMS of the complex electronic noise before TGC, as an echo amplitude (-110 dB).
ELECTRONIC_NOISE_AMPLITUDE = 3e-6
#: Backscatter of muscle fully replaced by fat and fibrous tissue (muscle_fat_fraction = 1).
FATTY_MUSCLE_BACKSCATTER = 0.8
#: Direction of the muscle fibres (LPS): craniocaudal with a slight obliquity, as the erector
#: spinae and multifidus fascicles run.
MUSCLE_FIBRE_DIRECTION_LPS = (0.1, 0.15, 1.0)
#: Scale (mm, Gaussian sigma) over which interface orientations are measured on the label map.
INTERFACE_SMOOTHING_MM = 0.6
#: Impedance (MRayl) of the coupling gel that fills air between the transducer face and the skin.
COUPLING_GEL_IMPEDANCE_MRAYL = 1.5

_MUSCLE_LABELS = (Label.ERECTOR_SPINAE, Label.MULTIFIDUS, Label.QUADRATUS_LUMBORUM, Label.PSOAS)
_LABEL_TABLE_SIZE = 256
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_DB_PER_NEPER = 20.0 / math.log(10.0)


def rotation_matrices(rotation_vectors_rad: np.ndarray) -> np.ndarray:
    """Rotation matrices from rotation vectors (axis times angle), by Rodrigues' formula.

    Parameters
    ----------
    rotation_vectors_rad : (N, 3) or (3,) float array, rad

    Returns
    -------
    (N, 3, 3) or (3, 3) float array
    """
    vectors = np.asarray(rotation_vectors_rad, dtype=float)
    single = vectors.ndim == 1
    vectors = np.atleast_2d(vectors)
    angles = np.linalg.norm(vectors, axis=1)
    axes = vectors / np.where(angles > 0, angles, 1.0)[:, None]
    x, y, z = axes.T
    zero = np.zeros_like(x)
    cross = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=1).reshape(-1, 3, 3)
    sin, cos = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    matrices = np.eye(3) + sin * cross + (1.0 - cos) * (cross @ cross)
    return matrices[0] if single else matrices


def _apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``matrix`` (4, 4) applied to (..., 3) points, as explicit broadcasts.

    Equal to ``points @ R.T + t``, without the BLAS call that costs more than the arithmetic
    for a few hundred thousand points when the machine's cores are busy.
    """
    x, y, z = points[..., 0:1], points[..., 1:2], points[..., 2:3]
    return matrix[:3, 3] + x * matrix[:3, 0] + y * matrix[:3, 1] + z * matrix[:3, 2]


@dataclass(frozen=True)
class ProbeModel:
    """Geometry, acoustics and tracking-sensor mount of an ultrasound probe.

    Pixels are square (PLUS's fan parameters are in pixels); the spacing is the smallest that
    fits the imaged region (fan or rectangle of ``depth_mm``) into ``width_px`` x ``height_px``,
    centred horizontally with the transducer at the top, as scanners display it. See
    docs/frames.md for the ``Image``, ``Transducer`` and ``Probe`` frames.

    Attributes
    ----------
    name : str
        Model name, e.g. ``"C5-2"``.
    kind : str
        ``"curvilinear"`` (fan of lines from a convex array) or ``"linear"`` (parallel lines).
    centre_frequency_mhz : float
        Transmit centre frequency, MHz (sets pulse length and attenuation).
    width_px, height_px : int
        Image size, pixels.
    depth_mm : float
        Imaging depth below the transducer face, mm.
    radius_mm : float
        Convex radius of the array (curvilinear), mm.
    fan_angle_deg : float
        Full opening angle of the fan (curvilinear), degrees.
    aperture_mm : float
        Width of the array (linear), mm.
    line_count : int
        Number of scan lines.
    lateral_fwhm_mm : float
        Beam width (full width at half maximum) at the focus, mm.
    pulse_cycles : float
        Pulse length in carrier cycles; the axial resolution is ``pulse_cycles * wavelength / 2``.
    dynamic_range_db : float
        Log-compression range mapped onto grey levels 0..255, dB.
    sensor_offset_mm : (3,) tuple of float
        Origin of the tracking sensor (the ``Probe`` frame) in the ``Transducer`` frame, mm.
    sensor_rotation_deg : (3,) tuple of float
        Rotation vector (axis times angle, degrees) of the sensor axes in the ``Transducer``
        frame: ``ProbeToTransducer`` rotates by it.
    """

    name: str
    kind: str
    centre_frequency_mhz: float
    width_px: int
    height_px: int
    depth_mm: float
    radius_mm: float = 0.0
    fan_angle_deg: float = 0.0
    aperture_mm: float = 0.0
    line_count: int = 160
    lateral_fwhm_mm: float = 2.0
    pulse_cycles: float = 3.0
    dynamic_range_db: float = 55.0
    sensor_offset_mm: tuple[float, float, float] = (4.0, -55.0, 18.0)
    sensor_rotation_deg: tuple[float, float, float] = (87.0, -3.0, 91.0)

    def __post_init__(self) -> None:
        if self.kind not in PROBE_KINDS:
            raise PhantomError(f"probe kind {self.kind!r} is unknown; use one of {', '.join(PROBE_KINDS)}")
        for name in ("centre_frequency_mhz", "depth_mm", "lateral_fwhm_mm", "pulse_cycles", "dynamic_range_db"):
            _require_positive(name, getattr(self, name))
        for name in ("width_px", "height_px", "line_count"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 16:
                raise PhantomError(f"probe {name} must be an integer of at least 16, got {getattr(self, name)!r}")
        if self.kind == "curvilinear":
            _require_positive("radius_mm", self.radius_mm)
            if not 0.0 < self.fan_angle_deg <= 120.0:
                raise PhantomError(f"probe fan_angle_deg must be in (0, 120], got {self.fan_angle_deg!r}")
        else:
            _require_positive("aperture_mm", self.aperture_mm)
        for name in ("sensor_offset_mm", "sensor_rotation_deg"):
            values = np.asarray(getattr(self, name), dtype=float)
            if values.shape != (3,) or not np.all(np.isfinite(values)):
                raise PhantomError(f"probe {name} must be 3 finite numbers, got {getattr(self, name)!r}")

    # -- geometry in pixels --------------------------------------------------------------
    @property
    def is_curvilinear(self) -> bool:
        return self.kind == "curvilinear"

    @property
    def half_angle_rad(self) -> float:
        """Half the fan opening (0 for a linear probe), rad."""
        return math.radians(self.fan_angle_deg) / 2.0 if self.is_curvilinear else 0.0

    @property
    def pixel_spacing_mm(self) -> float:
        """Size of one (square) pixel, mm."""
        if self.is_curvilinear:
            far_mm = self.radius_mm + self.depth_mm
            extent_x_mm = 2.0 * far_mm * math.sin(self.half_angle_rad)
            extent_y_mm = far_mm - self.radius_mm * math.cos(self.half_angle_rad)
        else:
            extent_x_mm, extent_y_mm = self.aperture_mm, self.depth_mm
        return max(extent_x_mm / (self.width_px - 1), extent_y_mm / (self.height_px - 1))

    @property
    def fan_origin_px(self) -> tuple[float, float]:
        """Apex of the fan (centre of the convex array), MF pixels; (0, 0) for a linear probe.

        It lies above the image (negative row): the fan's top corners touch row 0.
        """
        if not self.is_curvilinear:
            return (0.0, 0.0)
        apex_row = -self.radius_mm * math.cos(self.half_angle_rad) / self.pixel_spacing_mm
        return ((self.width_px - 1) / 2.0, apex_row)

    @property
    def fan_angles_deg(self) -> tuple[float, float]:
        """Edges of the fan from the image y axis, positive towards +x (PLUS ``FanAnglesDeg``)."""
        half_deg = math.degrees(self.half_angle_rad)
        return (-half_deg, half_deg)

    @property
    def fan_radius_start_px(self) -> float:
        """Distance from the fan apex to the transducer face, pixels (0 for linear)."""
        return self.radius_mm / self.pixel_spacing_mm if self.is_curvilinear else 0.0

    @property
    def fan_radius_stop_px(self) -> float:
        """Distance from the fan apex to the deepest sample, pixels."""
        return (self.radius_mm + self.depth_mm) / self.pixel_spacing_mm if self.is_curvilinear else 0.0

    @property
    def transducer_origin_px(self) -> tuple[float, float]:
        """Centre of the transducer face in the MF image, pixels (the ``Transducer`` origin)."""
        if self.is_curvilinear:
            origin_x, origin_y = self.fan_origin_px
            return (origin_x, origin_y + self.fan_radius_start_px)
        return ((self.width_px - 1) / 2.0, 0.0)

    @property
    def clip_rectangle(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(origin_px, size_px)`` of the bounding box of the imaged pixels (PLUS ``ClipRectangle*``).

        PLUS keeps columns ``origin .. origin + size`` inclusive, so ``size`` is the last
        imaged index minus the first.
        """
        rows, columns = np.nonzero(self.imaging_mask())
        origin = (int(columns.min()), int(rows.min()))
        return origin, (int(columns.max()) - origin[0], int(rows.max()) - origin[1])

    def imaging_mask(self) -> np.ndarray:
        """(height_px, width_px) bool array: True where a pixel lies inside the imaged region."""
        return _scan_geometry(self).inside.copy()

    # -- calibration -------------------------------------------------------------------
    def image_to_transducer(self) -> Transform:
        """``ImageToTransducer``: MF pixels to mm, origin at the centre of the transducer face."""
        spacing_mm = self.pixel_spacing_mm
        origin_x, origin_y = self.transducer_origin_px
        matrix = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
        matrix[:2, 3] = [-origin_x * spacing_mm, -origin_y * spacing_mm]
        return Transform(matrix, "Image", "Transducer")

    def probe_to_transducer(self) -> Transform:
        """``ProbeToTransducer``: the tracking sensor's pose on the probe handle (rigid, mm)."""
        rotation = rotation_matrices(np.radians(self.sensor_rotation_deg))
        return Transform.from_rotation_translation(rotation, self.sensor_offset_mm, "Probe", "Transducer")

    def image_to_probe(self) -> Transform:
        """``ImageToProbe``: the ultrasound calibration (pixels to sensor mm), exact for the simulator."""
        return self.probe_to_transducer().inverse() @ self.image_to_transducer()

    # -- acoustics ---------------------------------------------------------------------
    @property
    def wavelength_mm(self) -> float:
        return SPEED_OF_SOUND_MM_US / self.centre_frequency_mhz

    @property
    def axial_fwhm_mm(self) -> float:
        """Axial resolution: half the pulse length, mm."""
        return self.pulse_cycles * self.wavelength_mm / 2.0

    @property
    def sample_spacing_mm(self) -> float:
        """Spacing of samples along a scan line: fine enough for the pulse and the pixels, mm."""
        return min(self.axial_fwhm_mm / 3.0, self.pixel_spacing_mm / 2.0)

    @property
    def samples_per_line(self) -> int:
        return int(math.ceil(self.depth_mm / self.sample_spacing_mm)) + 1


def _require_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise PhantomError(f"probe {name} must be a positive number, got {value!r}")


#: Ultrasonix/BK C5-2-like convex probe set for lumbar paravertebral imaging.
CURVILINEAR_C5_2 = ProbeModel(
    name="C5-2",
    kind="curvilinear",
    centre_frequency_mhz=3.5,
    width_px=512,
    height_px=400,
    depth_mm=100.0,
    radius_mm=50.0,
    fan_angle_deg=65.0,
    line_count=160,
    lateral_fwhm_mm=2.0,
)

#: Ultrasonix/BK L14-5-like linear probe (38 mm array) for superficial structures.
LINEAR_L14_5 = ProbeModel(
    name="L14-5",
    kind="linear",
    centre_frequency_mhz=7.5,
    width_px=320,
    height_px=400,
    depth_mm=50.0,
    aperture_mm=38.0,
    line_count=192,
    lateral_fwhm_mm=0.8,
    sensor_offset_mm=(3.0, -48.0, 15.0),
    sensor_rotation_deg=(88.0, 2.0, -92.0),
)


# -- scan geometry (per probe, cached) ----------------------------------------------------


@dataclass(frozen=True, eq=False)
class _ScanGeometry:
    """Where the line samples are, and how pixels interpolate them.

    ``samples_px``: (L, S, 3) positions of the samples in the Image frame (pixels, z = 0).
    ``depths_mm``: (S,) depth of each sample below the transducer face.
    ``lateral_step_mm``: (S,) distance between neighbouring lines at each depth.
    ``inside``: (H, W) imaged pixels; ``gather``: (4, P) flat sample indices and ``weights``
    (4, P) bilinear weights of the P imaged pixels.
    """

    samples_px: np.ndarray
    depths_mm: np.ndarray
    inside: np.ndarray
    gather: np.ndarray
    weights: np.ndarray
    lateral_sigma_lines: float
    lateral_step_mm: np.ndarray

    @property
    def axial_step_mm(self) -> float:
        return float(self.depths_mm[1] - self.depths_mm[0])


def scan_geometry(probe: ProbeModel, samples_per_line: int | None = None) -> _ScanGeometry:
    """Line sample positions and scan-conversion tables of ``probe`` (cached per probe).

    Public hook for faster simulators (``workbench.rehearsal.imaging``) that sample lines more
    coarsely than :attr:`ProbeModel.samples_per_line`. Attributes: ``samples_px`` (L, S, 3)
    Image-frame pixel positions of the samples (z = 0); ``depths_mm`` (S,); ``inside`` (H, W)
    bool imaged pixels; ``gather`` (4, P) flat (L, S) indices and ``weights`` (4, P) bilinear
    weights of the P imaged pixels; ``lateral_sigma_lines``; ``lateral_step_mm`` (S,).
    """
    return _scan_geometry(probe, samples_per_line)


@functools.lru_cache(maxsize=8)
def _scan_geometry(probe: ProbeModel, samples_per_line: int | None = None) -> _ScanGeometry:
    spacing_mm = probe.pixel_spacing_mm
    depths_mm = np.linspace(0.0, probe.depth_mm, samples_per_line or probe.samples_per_line)
    columns, rows = np.meshgrid(np.arange(probe.width_px, dtype=float), np.arange(probe.height_px, dtype=float))
    if probe.is_curvilinear:
        half = probe.half_angle_rad
        angles = np.linspace(-half, half, probe.line_count)
        ranges_mm = probe.radius_mm + depths_mm
        origin_x, origin_y = probe.fan_origin_px
        samples_x = origin_x + np.outer(np.sin(angles), ranges_mm) / spacing_mm
        samples_y = origin_y + np.outer(np.cos(angles), ranges_mm) / spacing_mm
        pixel_angles = np.arctan2(columns - origin_x, rows - origin_y)
        pixel_depths_mm = np.hypot(columns - origin_x, rows - origin_y) * spacing_mm - probe.radius_mm
        line_coordinate = (pixel_angles + half) / (angles[1] - angles[0])
        lateral_step_mm = ranges_mm * (angles[1] - angles[0])
    else:
        half_aperture = probe.aperture_mm / 2.0
        offsets_mm = np.linspace(-half_aperture, half_aperture, probe.line_count)
        centre_x = (probe.width_px - 1) / 2.0
        samples_x = np.repeat((centre_x + offsets_mm / spacing_mm)[:, None], len(depths_mm), axis=1)
        samples_y = np.repeat((depths_mm / spacing_mm)[None, :], probe.line_count, axis=0)
        pixel_depths_mm = rows * spacing_mm
        line_coordinate = ((columns - centre_x) * spacing_mm + half_aperture) / (offsets_mm[1] - offsets_mm[0])
        lateral_step_mm = np.full(len(depths_mm), offsets_mm[1] - offsets_mm[0])
    sample_coordinate = pixel_depths_mm / (depths_mm[1] - depths_mm[0])
    tolerance = 1e-9
    inside = (
        (line_coordinate >= -tolerance)
        & (line_coordinate <= probe.line_count - 1 + tolerance)
        & (pixel_depths_mm >= -tolerance)
        & (pixel_depths_mm <= probe.depth_mm + tolerance)
    )
    gather, weights = _bilinear_tables(
        line_coordinate[inside], sample_coordinate[inside], probe.line_count, len(depths_mm)
    )
    samples_px = np.stack([samples_x, samples_y, np.zeros_like(samples_x)], axis=-1)
    return _ScanGeometry(
        samples_px=samples_px,
        depths_mm=depths_mm,
        inside=inside,
        gather=gather,
        weights=weights,
        # Beam width in lines at mid depth, where the focus is set.
        lateral_sigma_lines=probe.lateral_fwhm_mm / _FWHM_PER_SIGMA / lateral_step_mm[len(depths_mm) // 2],
        lateral_step_mm=lateral_step_mm,
    )


def _bilinear_tables(lines: np.ndarray, samples: np.ndarray, line_count: int, sample_count: int):
    """(4, P) flat indices into a (line_count, sample_count) array and their bilinear weights."""
    lines = np.clip(lines, 0.0, line_count - 1)
    samples = np.clip(samples, 0.0, sample_count - 1)
    line0 = np.minimum(np.floor(lines).astype(np.int64), line_count - 2)
    sample0 = np.minimum(np.floor(samples).astype(np.int64), sample_count - 2)
    line_w, sample_w = lines - line0, samples - sample0
    gather = np.stack(
        [
            line0 * sample_count + sample0,
            line0 * sample_count + sample0 + 1,
            (line0 + 1) * sample_count + sample0,
            (line0 + 1) * sample_count + sample0 + 1,
        ]
    )
    weights = np.stack(
        [(1 - line_w) * (1 - sample_w), (1 - line_w) * sample_w, line_w * (1 - sample_w), line_w * sample_w]
    )
    return gather, weights.astype(np.float32)


# -- tissue tables ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _AcousticTables:
    """Per-label-value lookup tables (length 256); ``known`` marks the phantom's labels."""

    impedance_mrayl: np.ndarray
    attenuation_db_cm_mhz: np.ndarray
    backscatter: np.ndarray
    is_bone: np.ndarray
    known: np.ndarray
    speed_m_s: np.ndarray


def _acoustic_tables(muscle_fat_fraction: float) -> _AcousticTables:
    impedance = np.zeros(_LABEL_TABLE_SIZE)
    attenuation = np.zeros(_LABEL_TABLE_SIZE)
    backscatter = np.zeros(_LABEL_TABLE_SIZE)
    speed = np.full(_LABEL_TABLE_SIZE, SPEED_OF_SOUND_MM_US * 1000.0)
    known = np.zeros(_LABEL_TABLE_SIZE, dtype=bool)
    for label, tissue in TISSUE.items():
        impedance[label] = tissue.impedance_mrayl
        speed[label] = tissue.speed_m_s
        attenuation[label] = tissue.attenuation_db_cm_mhz
        backscatter[label] = tissue.backscatter
        known[label] = True
    for label in _MUSCLE_LABELS:
        backscatter[label] += muscle_fat_fraction * (FATTY_MUSCLE_BACKSCATTER - backscatter[label])
    speed[Label.AIR] = SPEED_OF_SOUND_MM_US * 1000.0  # coupling gel, and outside the label map
    return _AcousticTables(impedance, attenuation, backscatter, _label_mask(BONE_LABELS), known, speed)


def acoustic_tables(muscle_fat_fraction: float = 0.0) -> _AcousticTables:
    """Per-label-value (256,) tables the simulator uses (public hook for faster simulators).

    Attributes ``impedance_mrayl``, ``attenuation_db_cm_mhz``, ``backscatter`` (muscles raised
    by ``muscle_fat_fraction``), ``is_bone``, ``known``, ``speed_m_s``; indexed by
    :class:`~workbench.anatomy.Label` value.
    """
    return _acoustic_tables(float(muscle_fat_fraction))


def point_spread(probe: ProbeModel, geometry: _ScanGeometry) -> "_PointSpread":
    """The simulator's point-spread function on the lines and samples of ``geometry`` (public hook).

    Attributes ``sigmas`` (Gaussian sigma across lines, along samples), ``peak_gain`` (a
    specular echo's peak after the blur) and ``rms_gain`` (a unit speckle field's RMS after it).
    """
    return _PointSpread(probe, geometry)


def anatomical_textures() -> tuple[tuple[np.ndarray, "_Texture"], ...]:
    """The backscatter textures fixed to the anatomy, as :class:`UltrasoundSimulator` applies them.

    Returns
    -------
    tuple of ((256,) bool label mask, texture)
        Muscle fibre texture on the muscle labels, fat lobules on FAT; ``texture.gain(points_lps)``
        gives the (...,) backscatter gain (mean 1) at (..., 3) LPS mm points.
    """
    return ((_label_mask(_MUSCLE_LABELS), _muscle_texture()), (_label_mask([Label.FAT]), _fat_texture()))


def _label_mask(labels) -> np.ndarray:
    """(256,) bool table: True at the given label values."""
    mask = np.zeros(_LABEL_TABLE_SIZE, dtype=bool)
    mask[list(labels)] = True
    return mask


class _Texture:
    """A backscatter gain (mean 1) fixed to the anatomy: a 2D pattern extruded along one direction.

    The pattern is a periodic tile of Gaussian noise smoothed to ``sigma_mm`` along two
    directions (``axes_lps``), log-normal with ``contrast``; along the third direction it does not
    change. It is the same for every frame, as tissue structure is.
    """

    _TILE_SIZE = 256

    def __init__(self, axes_lps, texel_mm, sigma_mm, contrast: float, seed: int) -> None:
        noise = np.random.default_rng(seed).standard_normal((self._TILE_SIZE, self._TILE_SIZE))
        field = ndimage.gaussian_filter(noise, np.divide(sigma_mm, texel_mm), mode="wrap")
        field /= field.std()
        self._gain = np.exp(contrast * field - contrast**2 / 2.0).ravel()
        axes = np.asarray(axes_lps, dtype=float)
        self._to_texels = (axes / np.linalg.norm(axes, axis=1, keepdims=True) / np.asarray(texel_mm)[:, None]).T

    def gain(self, points_lps: np.ndarray) -> np.ndarray:
        """Backscatter gain at (..., 3) LPS points."""
        texels = sum(points_lps[..., axis : axis + 1] * self._to_texels[axis] for axis in range(3))
        u, v = np.moveaxis(np.floor(texels).astype(np.int64) % self._TILE_SIZE, -1, 0)
        return self._gain[u * self._TILE_SIZE + v]


def _muscle_texture() -> _Texture:
    """Fascicles (~1 mm) between echogenic perimysium, running along the fibres: striations in
    sagittal frames, a speckled "starry" pattern in transverse ones."""
    along = np.asarray(MUSCLE_FIBRE_DIRECTION_LPS) / np.linalg.norm(MUSCLE_FIBRE_DIRECTION_LPS)
    across = np.cross(along, (0.0, 1.0, 0.0))
    return _Texture((across, np.cross(along, across)), (0.4, 0.4), (0.6, 0.6), contrast=0.8, seed=1)


def _fat_texture() -> _Texture:
    """Fat lobules between thin echogenic septa lying roughly parallel to the skin."""
    return _Texture(((0.15, 1.0, 0.1), (1.0, 0.0, 1.0)), (0.2, 2.0), (0.35, 6.0), contrast=1.0, seed=2)


# -- the label volume ---------------------------------------------------------------------


class _LabelVolume:
    """A label image as a numpy array with its LPS-mm-to-index affine; AIR outside."""

    def __init__(self, labels_image: sitk.Image, known: np.ndarray):
        if not isinstance(labels_image, sitk.Image):
            raise VolumeError(f"labels image must be a SimpleITK.Image, got {type(labels_image).__name__}")
        if labels_image.GetDimension() != 3 or labels_image.GetNumberOfComponentsPerPixel() != 1:
            raise VolumeError(
                f"labels image must be a 3D scalar image, got {labels_image.GetDimension()}D with "
                f"{labels_image.GetNumberOfComponentsPerPixel()} components"
            )
        array = sitk.GetArrayViewFromImage(labels_image)
        if array.dtype != np.uint8:
            raise VolumeError(f"labels image must have uint8 pixels, got {labels_image.GetPixelIDTypeAsString()}")
        unknown = np.flatnonzero((np.bincount(array.ravel(), minlength=_LABEL_TABLE_SIZE) > 0) & ~known)
        if unknown.size:
            raise VolumeError(
                "labels image holds values that are not phantom labels: " + ", ".join(str(v) for v in unknown[:10])
            )
        self._image = labels_image  # the array below is a view into its buffer
        self.array = array.ravel()
        self.size = np.array(labels_image.GetSize())
        direction = np.array(labels_image.GetDirection()).reshape(3, 3)
        mri_voxel_to_mri = np.eye(4)
        mri_voxel_to_mri[:3, :3] = direction * np.array(labels_image.GetSpacing())
        mri_voxel_to_mri[:3, 3] = labels_image.GetOrigin()
        self.mri_to_mri_voxel = np.linalg.inv(mri_voxel_to_mri)

    def lookup(self, points_lps: np.ndarray) -> np.ndarray:
        """Labels at (..., 3) LPS points (nearest voxel), uint8, AIR outside the volume."""
        index = np.rint(_apply_affine(self.mri_to_mri_voxel, points_lps)).astype(np.int64)
        inside = np.all((index >= 0) & (index < self.size), axis=-1)
        i, j, k = np.moveaxis(np.where(inside[..., None], index, 0), -1, 0)
        flat = (k * self.size[1] + j) * self.size[0] + i
        return np.where(inside, self.array[flat], np.uint8(Label.AIR))


# -- the simulator ------------------------------------------------------------------------


class UltrasoundSimulator:
    """Simulates B-mode frames of one label image with one probe; reuse it for a sweep.

    Parameters
    ----------
    labels_image : SimpleITK.Image
        uint8 label map (``workbench.phantom.labels.Label`` values) in LPS mm (the ``Mri`` frame).
    probe : ProbeModel
    muscle_fat_fraction : float
        Fatty infiltration of the muscles, 0..1 (rises with age); raises their echogenicity.
    tissue_speeds : bool
        Each tissue's own speed of sound (times ``speed_scale``) instead of the scanner's
        1540 m/s: echoes are drawn at the depth 1540 m/s gives them (module docstring).
    speed_scale : float
        Factor on every tissue speed (with ``tissue_speeds``).
    elevation_fwhm_mm : float
        Elevational beam width (FWHM across the image plane), mm; 0 images one plane.
    reverberation_gain : float
        Reflection of the transducer face for the multiples of echoes shallower than
        ``REVERBERATION_MAX_DEPTH_MM`` (mm; :mod:`workbench.phantom.error_model`); 0: none.
    bone_dropout : BoneDropout, optional
        Patches of bone surface without echo (:class:`workbench.phantom.error_model.BoneDropout`).

    Raises
    ------
    VolumeError
        If the image is not a 3D uint8 label map of phantom labels.
    PhantomError
        If ``muscle_fat_fraction`` is outside 0..1.
    """

    def __init__(
        self,
        labels_image: sitk.Image,
        probe: ProbeModel,
        *,
        muscle_fat_fraction: float = 0.0,
        tissue_speeds: bool = False,
        speed_scale: float = 1.0,
        elevation_fwhm_mm: float = 0.0,
        reverberation_gain: float = 0.0,
        bone_dropout=None,
    ):
        for name, value in (
            ("speed_scale", speed_scale), ("elevation_fwhm_mm", elevation_fwhm_mm), ("reverberation_gain", reverberation_gain)
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise PhantomError(f"{name} must be a non-negative number, got {value!r}")
        if speed_scale <= 0:
            raise PhantomError(f"speed_scale must be positive, got {speed_scale!r}")
        self._tissue_speeds = bool(tissue_speeds)
        self._speed_scale = float(speed_scale)
        self._elevation_fwhm_mm = float(elevation_fwhm_mm)
        self._reverberation_gain = float(reverberation_gain)
        self._bone_dropout = bone_dropout
        if not isinstance(muscle_fat_fraction, (int, float)) or not 0.0 <= muscle_fat_fraction <= 1.0:
            raise PhantomError(f"muscle_fat_fraction must be in [0, 1], got {muscle_fat_fraction!r}")
        if not isinstance(probe, ProbeModel):
            raise PhantomError(f"probe must be a ProbeModel, got {type(probe).__name__}")
        self.probe = probe
        self._tables = _acoustic_tables(float(muscle_fat_fraction))
        self._labels = _LabelVolume(labels_image, self._tables.known)
        self._geometry = _scan_geometry(probe)
        self._psf = _PointSpread(probe, self._geometry)
        self._textures = anatomical_textures()
        geometry = self._geometry
        self._attenuation_db_per_sample = (
            self._tables.attenuation_db_cm_mhz * probe.centre_frequency_mhz * geometry.axial_step_mm / 10.0
        )
        tgc_db = 2.0 * TGC_DB_CM_MHZ * probe.centre_frequency_mhz * geometry.depths_mm / 10.0
        self._interface_sigmas = (
            INTERFACE_SMOOTHING_MM / float(np.median(geometry.lateral_step_mm)),
            INTERFACE_SMOOTHING_MM / geometry.axial_step_mm,
        )
        self._receive_gain = 10.0 ** ((tgc_db + SYSTEM_GAIN_DB) / 20.0)

    def frame(
        self, image_to_lps: Transform, *, rng: np.random.Generator | int | None = None, noise: bool = True
    ) -> np.ndarray:
        """One B-mode frame, MF orientation.

        Parameters
        ----------
        image_to_lps : Transform
            ``ImageToMri``: MF pixels (column, row, 0) to LPS mm. See docs/frames.md.
        rng : numpy Generator or int, optional
            Source of speckle and electronic noise (an int seeds a new generator).
        noise : bool
            False gives a noise-free frame: tissue at its mean echo level, no speckle.

        Returns
        -------
        (height_px, width_px) uint8 array
            Row 0 nearest the transducer, column 0 on the unmarked side; 0 outside the fan.
        """
        _check_image_to_lps(image_to_lps)
        if self._elevation_fwhm_mm > 0:
            specular, diffuse = self._elevation_sum(image_to_lps.matrix)
        else:
            specular, diffuse = self._echo_sources(*self._line_samples(image_to_lps.matrix))
        if noise:
            envelope = self._psf.noisy_envelope(specular, diffuse, np.random.default_rng(rng))
        else:
            envelope = self._psf.mean_envelope(specular, diffuse)
        grey = self._log_compress(envelope)
        return self._scan_convert(grey)

    def _line_samples(
        self, image_to_lps: np.ndarray, elevation_px: float = 0.0, true_depths_mm: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(L, S) labels and (L, S, 3) LPS positions of what each line sample shows.

        Without tissue speeds, the sample at depth d shows what lies at d. With them, it shows
        what lies at the true path length s whose apparent depth (1540 m/s) is d
        (``true_depths_mm`` (L, S), mm, if known; else from the labels of this plane).
        """
        samples_px = self._geometry.samples_px
        if elevation_px:
            samples_px = samples_px + np.array([0.0, 0.0, elevation_px])
        if not self._tissue_speeds:
            points_lps = _apply_affine(image_to_lps, samples_px)
            return self._labels.lookup(points_lps), points_lps
        if true_depths_mm is None:
            true_depths_mm = self._true_depths_mm(self._labels.lookup(_apply_affine(image_to_lps, samples_px)))
        depths_mm = self._geometry.depths_mm
        starts_lps = _apply_affine(image_to_lps, samples_px[:, 0])  # (L, 3)
        along_lps = (_apply_affine(image_to_lps, samples_px[:, -1]) - starts_lps) / depths_mm[-1]  # per mm of depth
        points_lps = starts_lps[:, None, :] + along_lps[:, None, :] * true_depths_mm[..., None]
        return self._labels.lookup(points_lps), points_lps

    def _true_depths_mm(self, labels: np.ndarray) -> np.ndarray:
        """(L, S) true path length (mm) of the echo each line sample shows, from the labels at the true depths."""
        depths_mm = self._geometry.depths_mm
        step_mm = self._geometry.axial_step_mm
        speeds = self._tables.speed_m_s[labels] * self._speed_scale
        before_tissue = np.cumsum(labels != Label.AIR, axis=1) == 0
        speeds[before_tissue] = SPEED_OF_SOUND_MM_US * 1000.0  # coupling gel
        apparent_mm = np.zeros_like(speeds)
        apparent_mm[:, 1:] = np.cumsum(step_mm * (SPEED_OF_SOUND_MM_US * 1000.0) / speeds[:, :-1], axis=1)
        true_mm = np.empty_like(apparent_mm)
        for line, apparent in enumerate(apparent_mm):
            true_mm[line] = np.interp(depths_mm, apparent, depths_mm)
        # Beyond the last true sample: continue at the last tissue's speed.
        last = apparent_mm[:, -1:]
        beyond = depths_mm[None, :] > last
        extrapolated = depths_mm[-1] + (depths_mm[None, :] - last) * speeds[:, -1:] / (SPEED_OF_SOUND_MM_US * 1000.0)
        return np.where(beyond, extrapolated, true_mm)

    def _elevation_sum(self, image_to_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Echoes of a beam ``elevation_fwhm_mm`` thick: planes at 0 and +-FWHM/2, weights 1/2 and 1/4.

        Specular echoes add with the weights (coherently), diffuse ones in power.
        """
        offset_px = self._elevation_fwhm_mm / 2.0 / self.probe.pixel_spacing_mm
        specular_sum, power_sum = 0.0, 0.0
        true_depths_mm = None
        if self._tissue_speeds:  # the speeds along the central plane's lines serve the whole beam
            samples_lps = _apply_affine(image_to_lps, self._geometry.samples_px)
            true_depths_mm = self._true_depths_mm(self._labels.lookup(samples_lps))
        for offset, weight in ((-offset_px, 0.25), (0.0, 0.5), (offset_px, 0.25)):
            specular, diffuse = self._echo_sources(*self._line_samples(image_to_lps, offset, true_depths_mm))
            specular_sum = specular_sum + weight * specular
            power_sum = power_sum + weight * diffuse**2
        return specular_sum, np.sqrt(power_sum)

    def _reverberated(self, specular: np.ndarray, reflection: np.ndarray, reaching: np.ndarray) -> np.ndarray:
        """Specular echoes plus their multiples between the transducer face and the interface.

        An echo of an interface at depth d (reflection r, two-way amplitude ``reaching`` down to
        it) shallower than the reverberation depth bounces off the face (reflection g, the
        ``reverberation_gain``) and off the interface again: it repeats at 2d times
        ``m = g |r| reaching`` and at 3d times ``m^2``. Strong shallow reflectors (bone, fascia)
        reverberate; weak ones hardly.
        """
        from workbench.phantom.error_model import REVERBERATION_MAX_DEPTH_MM

        count = specular.shape[1]
        shallow = min(int(REVERBERATION_MAX_DEPTH_MM / self._geometry.axial_step_mm), count)
        result = specular.copy()
        round_trip = self._reverberation_gain * np.abs(reflection[:, :shallow]) * reaching[:, :shallow]
        for order in (2, 3):
            sources = np.arange(shallow)
            targets = sources * order
            keep = targets < count
            result[:, targets[keep]] += (round_trip ** (order - 1) * specular[:, :shallow])[:, keep]
        return result

    def _echo_sources(self, labels: np.ndarray, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L, S) specular echo and diffuse echo amplitudes, both attenuated, from (L, S) labels."""
        tables = self._tables
        impedance = tables.impedance_mrayl[labels]
        before_tissue = np.cumsum(labels != Label.AIR, axis=1) == 0
        impedance[before_tissue] = COUPLING_GEL_IMPEDANCE_MRAYL
        reflection = np.zeros_like(impedance)
        reflection[:, 1:] = (impedance[:, 1:] - impedance[:, :-1]) / (impedance[:, 1:] + impedance[:, :-1])
        is_bone = tables.is_bone[labels]
        enters_bone = np.zeros_like(is_bone)
        enters_bone[:, 1:] = is_bone[:, 1:] & ~is_bone[:, :-1]
        # Natural log of the two-way amplitude reaching the far side of each sample.
        log_transmission = np.log1p(-np.minimum(reflection**2, 1.0 - 1e-12)) + np.where(
            enters_bone, math.log(CORTEX_TRANSMISSION), 0.0
        )
        log_attenuation = -2.0 * self._attenuation_db_per_sample[labels] / _DB_PER_NEPER
        log_attenuation[before_tissue] = 0.0
        beyond = np.cumsum(log_transmission + log_attenuation, axis=1)
        reaching = np.exp(beyond - log_transmission - log_attenuation)  # up to the sample's front face
        specular = reaching * reflection * self._incidence_factor(impedance)
        if self._reverberation_gain > 0:
            specular = self._reverberated(specular, reflection, reaching)
        if self._bone_dropout is not None:
            from workbench.phantom.error_model import BONE_DROPOUT_GAIN

            surface = np.nonzero(enters_bone)
            invisible = self._bone_dropout.invisible(points_lps[surface])
            specular[surface[0][invisible], surface[1][invisible]] *= BONE_DROPOUT_GAIN
        backscatter = tables.backscatter[labels]
        backscatter[before_tissue] = 0.0
        for label_mask, texture in self._textures:
            textured = label_mask[labels]
            backscatter[textured] *= texture.gain(points_lps[textured])
        diffuse = np.exp(beyond) * backscatter * SCATTER_AMPLITUDE
        return specular, diffuse

    def _incidence_factor(self, impedance: np.ndarray) -> np.ndarray:
        """(L, S) cos^2 of the angle between the beam and the interface normal.

        The normal is the in-plane gradient of the impedance smoothed over
        :data:`INTERFACE_SMOOTHING_MM`, so that a voxel staircase reads as the surface it
        approximates; interfaces met at grazing incidence send little back to the probe.
        """
        geometry = self._geometry
        smooth = ndimage.gaussian_filter(impedance, self._interface_sigmas, mode="nearest")
        axial = np.gradient(smooth, axis=1) / geometry.axial_step_mm
        lateral = np.gradient(smooth, axis=0) / geometry.lateral_step_mm
        axial_squared = axial**2
        return axial_squared / np.maximum(axial_squared + lateral**2, 1e-30)

    def _log_compress(self, envelope: np.ndarray) -> np.ndarray:
        """(L, S) envelope to grey levels 0..255 (float), after TGC and gain."""
        level_db = 20.0 * np.log10(np.maximum(envelope * self._receive_gain, 1e-12))
        range_db = self.probe.dynamic_range_db
        return np.clip((level_db + range_db) * (255.0 / range_db), 0.0, 255.0)

    def _scan_convert(self, grey: np.ndarray) -> np.ndarray:
        geometry = self._geometry
        values = (grey.ravel()[geometry.gather] * geometry.weights).sum(axis=0)
        frame = np.zeros(geometry.inside.shape, dtype=np.uint8)
        frame[geometry.inside] = np.rint(values).astype(np.uint8)
        return frame


class _PointSpread:
    """Gaussian pulse envelope along lines and Gaussian beam across lines (baseband)."""

    def __init__(self, probe: ProbeModel, geometry: _ScanGeometry):
        self.sigmas = (geometry.lateral_sigma_lines, probe.axial_fwhm_mm / _FWHM_PER_SIGMA / geometry.axial_step_mm)
        kernels = [_gaussian_kernel(sigma) for sigma in self.sigmas]
        # Scale so a specular echo keeps its amplitude at its peak and speckle its RMS.
        self.peak_gain = float(np.prod([kernel.max() for kernel in kernels]))
        self.rms_gain = float(np.prod([np.sqrt(np.sum(kernel**2)) for kernel in kernels]))

    def _blur(self, field: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(field, self.sigmas, mode="nearest", truncate=3.0)

    def noisy_envelope(self, specular: np.ndarray, diffuse: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Envelope of specular echoes plus Rayleigh speckle plus electronic noise."""
        shape = specular.shape
        scatterers = _complex_normal(rng, shape)
        scatterers *= diffuse * (self.peak_gain / self.rms_gain / math.sqrt(2.0))
        echo = self._blur(specular + scatterers) / self.peak_gain
        electronic = _complex_normal(rng, shape)
        return np.abs(echo + electronic * (ELECTRONIC_NOISE_AMPLITUDE / math.sqrt(2.0)))

    def mean_envelope(self, specular: np.ndarray, diffuse: np.ndarray) -> np.ndarray:
        """Noise-free envelope: specular echoes and the RMS level of the diffuse echoes."""
        coherent = np.abs(self._blur(specular)) / self.peak_gain
        incoherent = np.sqrt(self._blur(diffuse**2))
        return np.hypot(coherent, incoherent)


def _complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Complex Gaussian samples (complex64) with independent unit-variance parts."""
    parts = rng.standard_normal((2, *shape), dtype=np.float32)
    return parts[0] + 1j * parts[1]


def _gaussian_kernel(sigma: float) -> np.ndarray:
    impulse = np.zeros(2 * int(math.ceil(3.0 * sigma)) + 3)
    impulse[len(impulse) // 2] = 1.0
    return ndimage.gaussian_filter1d(impulse, sigma, mode="constant", truncate=3.0)


def _check_image_to_lps(image_to_lps: Transform) -> None:
    if not isinstance(image_to_lps, Transform):
        raise FrameError(f"image_to_lps must be a Transform, got {type(image_to_lps).__name__}")
    if image_to_lps.from_frame != "Image" or image_to_lps.to_frame != "Mri":
        raise FrameError(f"image_to_lps must map Image to Mri, got {image_to_lps.name}")


def simulate_frame(
    labels_image: sitk.Image,
    image_to_lps: Transform,
    probe: ProbeModel,
    *,
    rng: np.random.Generator | int | None = None,
    muscle_fat_fraction: float = 0.0,
    noise: bool = True,
) -> np.ndarray:
    """Simulate one B-mode frame of ``labels_image`` seen by ``probe`` placed at ``image_to_lps``.

    For many frames of the same label map, build one :class:`UltrasoundSimulator` and call
    its :meth:`~UltrasoundSimulator.frame`; this function does exactly that for one frame.

    Parameters
    ----------
    labels_image : SimpleITK.Image
        uint8 label map in LPS mm (the ``Mri`` frame).
    image_to_lps : Transform
        ``ImageToMri`` of the frame: MF pixels to LPS mm. See docs/frames.md.
    probe : ProbeModel
    rng : numpy Generator or int, optional
        Speckle and electronic noise source (an int seeds a generator).
    muscle_fat_fraction : float
        0..1; raises muscle echogenicity.
    noise : bool
        False: no speckle and no electronic noise.

    Returns
    -------
    (probe.height_px, probe.width_px) uint8 array, MF orientation
    """
    simulator = UltrasoundSimulator(labels_image, probe, muscle_fat_fraction=muscle_fat_fraction)
    return simulator.frame(image_to_lps, rng=rng, noise=noise)
