"""Fast B-mode for the rehearsal: tissue with elevational slice thickness, the needle, injectate.

The picture follows :mod:`workbench.phantom.ultrasound` (same tissue tables, textures, probe
geometry, time-gain compensation and log compression; docs/ultrasound-simulation.md) with the
changes that make it live (>= 25 frames/s at 256 lines on 2 cores, ``workbench bench rehearsal``):

- **Slice thickness.** The beam is ``elevation_fwhm_mm`` thick across the image plane. Each
  line is sampled on ``elevation_planes`` parallel planes at the Gauss-Hermite nodes of the
  Gaussian elevation profile (default 5: 0, +-0.58 and +-1.21 FWHM, weights 0.53, 0.22, 0.01);
  specular echoes add coherently with the weights, diffuse echoes in power, and each plane
  has its own shadows. So a structure or needle a few mm off the plane still shows, faintly.
- **Coarser line sampling**: half the axial resolution (``probe.axial_fwhm_mm / 2``) instead of
  a third; labels are looked up by nearest voxel in a volume padded with air, int32 indices.
- **Tissue cache**: the tissue part (specular and diffuse echoes, two-way attenuation) depends
  on the pose only, so while the probe is still, only the needle and fluid are redrawn.
- **Scatterers fixed to the anatomy**: a periodic 3D tile of complex Gaussian amplitudes, one
  per :data:`SCATTERER_CELL_MM` cube of the Mri frame, is read at the line samples, scaled by
  the diffuse echo level and blurred by the point-spread function. The speckle moves with the
  tissue as the probe slides and decorrelates as it tilts, as a scanner's does.
- **Needle**: a steel shaft is a specular reflector (:func:`needle_visibility`): its echo is
  strongest when the shaft is perpendicular to the beam and falls with the angle; it is drawn
  wherever the shaft lies within the elevational beam, weighted by the beam profile at its
  distance from the plane: in plane a line, out of plane the dot where it crosses the slab
  (the tip cannot be told from the shaft). Below each shaft echo a comet tail of
  reverberations inside the tube, one outer diameter apart, each :data:`COMET_TAIL_DECAY` of
  the one before.
- **Injectate**: where ``injectate.contains`` is true (asked on every elevation plane, so a
  pool beside the plane shows in part) the tissue echoes are replaced by those of fluid
  (anechoic, :data:`FLUID_BACKSCATTER`), with a faint rim where the impedance changes and
  posterior acoustic enhancement (fluid does not attenuate, so what lies beyond it is brighter
  by the attenuation the displaced tissue would have caused).

Frames and naming: docs/frames.md. Everything is in the ``Mri`` frame (LPS mm).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from workbench.anatomy import Label, LabelMap
from workbench.frames import apply_affine, apply_linear
from workbench.phantom.ultrasound import (
    CORTEX_TRANSMISSION,
    COUPLING_GEL_IMPEDANCE_MRAYL,
    ELECTRONIC_NOISE_AMPLITUDE,
    INTERFACE_SMOOTHING_MM,
    SCATTER_AMPLITUDE,
    SYSTEM_GAIN_DB,
    TGC_DB_CM_MHZ,
    ProbeModel,
    acoustic_tables,
    anatomical_textures,
    point_spread,
    scan_geometry,
)
from workbench.rehearsal.scene import RehearsalError

__all__ = [
    "COMET_TAIL_DECAY",
    "DEFAULT_ELEVATION_FWHM_MM",
    "FLUID_BACKSCATTER",
    "ImagingError",
    "RehearsalImager",
    "needle_visibility",
    "tip_visibility",
]

#: Elevational beam width (FWHM across the image plane) of a C5-2-like convex probe at the
#: depth of the lumbar paravertebral space, mm (a few mm for a fixed-focus elevation lens).
DEFAULT_ELEVATION_FWHM_MM = 4.0
#: Pressure reflection coefficient of steel in soft tissue, (45.7 - 1.63) / (45.7 + 1.63).
NEEDLE_REFLECTION = 0.93
#: Angular width (Gaussian sigma) of the specular echo of a smooth shaft, degrees: at 30 deg
#: a third of the echo is left (-10 dB), at 60 deg 1 % (-38 dB: lost in the speckle) (Chin KJ et al., Reg Anesth Pain Med 2008;
#: 33:532-544; Schafhalter-Zoppoth I et al., Reg Anesth Pain Med 2004; 29:480-488).
NEEDLE_SPECULAR_WIDTH_DEG = 20.0
#: Diffuse part of the needle echo (surface roughness, bevel) left at any angle, relative.
NEEDLE_DIFFUSE_FLOOR = 0.002
#: Amplitude of each comet-tail reverberation relative to the one before it.
COMET_TAIL_DECAY = 0.4
#: Comet-tail reverberations drawn below each shaft echo.
COMET_TAIL_COUNT = 5
#: Backscatter of injected fluid (local anaesthetic: anechoic, a little tissue debris).
FLUID_BACKSCATTER = 0.01
#: Impedance of the injectate, MRayl (saline); the fluid rim echo is its step to the tissue.
FLUID_IMPEDANCE_MRAYL = 1.52
#: Size of the cells of the anatomy-fixed scatterer field, mm (below the axial resolution).
SCATTERER_CELL_MM = 0.25
#: Elevational profile below which a shaft point is not drawn (relative amplitude).
_PROFILE_CUTOFF = 0.02
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_DB_PER_NEPER = 20.0 / math.log(10.0)
_TABLE_SIZE = 256
_SCATTERER_TILE = 64  # cells per side of the periodic scatterer tile (a power of 2)


class ImagingError(RehearsalError):
    """The imager cannot be built or asked for a frame: bad label map, probe, or pose."""


def needle_visibility(angle_to_beam_deg) -> np.ndarray | float:
    """Relative brightness (0..1) of a needle shaft's echo at an angle to the beam.

    The shaft is a specular reflector: the echo comes back to the transducer when the shaft is
    perpendicular to the beam (parallel to the transducer face) and is reflected away from it
    as the shaft steepens. ``angle_to_beam_deg`` is the angle between the shaft and the plane
    perpendicular to the beam (0 = parallel to the face, the insertion angle of an in-plane
    needle under a flat probe; 90 = along the beam). The model is a Gaussian specular lobe of
    width :data:`NEEDLE_SPECULAR_WIDTH_DEG` over a diffuse floor :data:`NEEDLE_DIFFUSE_FLOOR`:
    1.00 at 0 deg, 0.33 at 30 deg, 0.013 at 60 deg.

    Parameters
    ----------
    angle_to_beam_deg : float or array, degrees
        Sign and angles beyond 90 fold back (a line has no direction).

    Returns
    -------
    float or array like the input, 0..1
    """
    angle = np.abs(np.asarray(angle_to_beam_deg, dtype=float)) % 180.0
    angle = np.minimum(angle, 180.0 - angle)
    lobe = np.exp(-0.5 * (angle / NEEDLE_SPECULAR_WIDTH_DEG) ** 2)
    value = NEEDLE_DIFFUSE_FLOOR + (1.0 - NEEDLE_DIFFUSE_FLOOR) * lobe
    return float(value) if value.ndim == 0 else value


def _elevation_profile(distance_mm, elevation_fwhm_mm: float):
    """Relative amplitude of the beam at ``distance_mm`` from the image plane (0.5 at FWHM/2)."""
    return np.exp(-4.0 * math.log(2.0) * (np.asarray(distance_mm) / elevation_fwhm_mm) ** 2)


def _fan_coordinates(probe: ProbeModel, x_px, y_px, samples_per_line: int):
    """Continuous (line, sample) coordinates of Image pixels (x, y), and whether they lie in the fan.

    Also the unit beam direction (Image frame, (..., 2)) of the line through each point.
    """
    spacing_mm = probe.pixel_spacing_mm
    step_mm = probe.depth_mm / (samples_per_line - 1)
    if probe.is_curvilinear:
        origin_x, origin_y = probe.fan_origin_px
        half = probe.half_angle_rad
        angle = np.arctan2(x_px - origin_x, y_px - origin_y)
        depth_mm = np.hypot(x_px - origin_x, y_px - origin_y) * spacing_mm - probe.radius_mm
        line = (angle + half) / (2.0 * half) * (probe.line_count - 1)
        beam = np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    else:
        centre_x = (probe.width_px - 1) / 2.0
        half_aperture = probe.aperture_mm / 2.0
        depth_mm = y_px * spacing_mm
        line = ((x_px - centre_x) * spacing_mm + half_aperture) / probe.aperture_mm * (probe.line_count - 1)
        beam = np.broadcast_to(np.array([0.0, 1.0]), (*np.shape(line), 2))
    sample = depth_mm / step_mm
    inside = (line >= 0) & (line <= probe.line_count - 1) & (depth_mm >= 0) & (depth_mm <= probe.depth_mm)
    return line, sample, inside, beam


def _image_frame(image_to_mri: np.ndarray, probe: ProbeModel):
    """``(image_to_mri, mri_to_image)`` as (4, 4) float arrays, checked against the probe's pixel spacing."""
    image_to_mri = np.asarray(getattr(image_to_mri, "matrix", image_to_mri), dtype=float)
    if image_to_mri.shape != (4, 4) or not np.all(np.isfinite(image_to_mri)):
        raise ImagingError(f"image_to_mri must be a finite (4, 4) matrix, got shape {image_to_mri.shape}")
    scales = np.linalg.norm(image_to_mri[:3, :3], axis=0)
    if not np.allclose(scales, probe.pixel_spacing_mm, rtol=1e-3):
        raise ImagingError(
            f"image_to_mri scales pixels by {np.round(scales, 4).tolist()} mm, but probe {probe.name} has "
            f"{probe.pixel_spacing_mm:.4f} mm pixels: use workbench.rehearsal.probe.image_to_mri with the same probe"
        )
    return image_to_mri, np.linalg.inv(image_to_mri)


def tip_visibility(image_to_mri, probe: ProbeModel, needle, elevation_fwhm_mm: float) -> float:
    """How visible the needle TIP is in the image at ``image_to_mri``: 0..1.

    The elevational beam profile at the tip's distance from the image plane (1 in the plane,
    0.5 at ``elevation_fwhm_mm / 2``, Gaussian), and 0 when the tip is outside the fan or the
    imaging depth, or the needle is not inserted (``depth_mm`` <= 0). Above 0.5 the tip lies
    within the beam's FWHM: CORE counts it visible.

    Parameters
    ----------
    image_to_mri : (4, 4) float array
        ``ImageToMri`` of the frame (MF pixels to Mri mm).
    probe : ProbeModel
    needle : NeedleState or None
    elevation_fwhm_mm : float
    """
    if needle is None or float(needle.depth_mm) <= 0.0:
        return 0.0
    if not elevation_fwhm_mm > 0:
        raise ImagingError(f"elevation_fwhm_mm must be positive, got {elevation_fwhm_mm!r}")
    _, mri_to_image = _image_frame(image_to_mri, probe)
    tip_px = apply_affine(mri_to_image, np.asarray(needle.tip_mri, dtype=float))
    _, _, inside, _ = _fan_coordinates(probe, tip_px[0], tip_px[1], 2)
    if not bool(inside):
        return 0.0
    return float(_elevation_profile(tip_px[2] * probe.pixel_spacing_mm, elevation_fwhm_mm))


def _workbench_volume(label_map: LabelMap) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The label map in the workbench encoding (:class:`Label` values), padded with one voxel of AIR.

    Returns the flat uint8 array, ``MriToMriVoxel`` of the padded grid, and its (I, J, K) size.
    Values the table does not name are imaged as UNLABELLED tissue.
    """
    array = label_map.array
    if array.size and int(array.min()) < 0:
        raise ImagingError(f"{label_map!r}: negative label values cannot be imaged")
    largest = max(int(array.max()) if array.size else 0, max(label_map.table, default=0))
    if largest > 65535:
        raise ImagingError(f"{label_map!r}: label values above 65535 cannot be imaged")
    lut = np.full(largest + 1, int(Label.UNLABELLED), dtype=np.uint8)
    for value, name in label_map.table.items():
        lut[value] = int(Label[name])
    identity = array.dtype == np.uint8 and np.array_equal(lut, np.arange(len(lut)))
    padded = np.full(tuple(n + 2 for n in array.shape), int(Label.AIR), dtype=np.uint8)
    padded[1:-1, 1:-1, 1:-1] = array if identity else lut[array]
    voxel_shift = np.eye(4)
    voxel_shift[:3, 3] = 1.0
    mri_to_padded_voxel = voxel_shift @ label_map.mri_to_mri_voxel.matrix
    size_ijk = tuple(int(n) for n in padded.shape[::-1])
    return padded.ravel(), mri_to_padded_voxel, size_ijk


class RehearsalImager:
    """Live B-mode frames of one case's label map with one probe (reuse it for a whole attempt).

    Parameters
    ----------
    label_map : workbench.anatomy.LabelMap
        The case label map with its table, Mri frame; any label encoding whose names are in
        the vocabulary (imported segmentations too).
    probe : ProbeModel
        E.g. :data:`workbench.rehearsal.probe.REHEARSAL_PROBE` (C5-2-like, 256 lines).
    elevation_fwhm_mm : float
        Elevational beam width (FWHM across the image plane), mm; > 0.
    muscle_fat_fraction : float
        0..1, raises muscle echogenicity as in the phantom simulator.
    seed : int
        Seeds the scatterer tile and the electronic noise field.
    elevation_planes : int
        Planes sampled across the beam (1, 3, 5 or 7): Gauss-Hermite nodes of its profile.
    axial_step_mm : float, optional
        Spacing of samples along a line; default half the probe's axial resolution.

    Raises
    ------
    ImagingError
        Bad arguments or a label map that cannot be imaged.
    """

    def __init__(
        self,
        label_map: LabelMap,
        probe: ProbeModel,
        *,
        elevation_fwhm_mm: float,
        muscle_fat_fraction: float = 0.0,
        seed: int = 0,
        elevation_planes: int = 5,
        axial_step_mm: float | None = None,
    ):
        if not isinstance(probe, ProbeModel):
            raise ImagingError(f"probe must be a ProbeModel, got {type(probe).__name__}")
        if not isinstance(label_map, LabelMap):
            raise ImagingError(f"label_map must be a workbench.anatomy.LabelMap, got {type(label_map).__name__}")
        if isinstance(elevation_fwhm_mm, bool) or not isinstance(elevation_fwhm_mm, (int, float)) or not (
            math.isfinite(elevation_fwhm_mm) and elevation_fwhm_mm > 0
        ):
            raise ImagingError(f"elevation_fwhm_mm must be a positive number of mm, got {elevation_fwhm_mm!r}")
        if not isinstance(muscle_fat_fraction, (int, float)) or not 0.0 <= muscle_fat_fraction <= 1.0:
            raise ImagingError(f"muscle_fat_fraction must be in [0, 1], got {muscle_fat_fraction!r}")
        if isinstance(elevation_planes, bool) or elevation_planes not in (1, 3, 5, 7):
            raise ImagingError(f"elevation_planes must be 1, 3, 5 or 7 (odd: one plane is the image plane), got {elevation_planes!r}")
        self.label_map = label_map
        self.probe = probe
        self.elevation_fwhm_mm = float(elevation_fwhm_mm)
        self.elevation_planes = elevation_planes
        step_mm = float(axial_step_mm) if axial_step_mm is not None else probe.axial_fwhm_mm / 2.0
        if not (math.isfinite(step_mm) and step_mm > 0):
            raise ImagingError(f"axial_step_mm must be positive, got {axial_step_mm!r}")
        samples = int(math.ceil(probe.depth_mm / step_mm)) + 1
        self._geometry = scan_geometry(probe, samples)
        geometry = self._geometry
        self.axial_step_mm = geometry.axial_step_mm
        self._volume, self._mri_to_voxel, self._size_ijk = _workbench_volume(label_map)

        tables = acoustic_tables(float(muscle_fat_fraction))
        f32 = np.float32
        self._impedance = tables.impedance_mrayl.astype(f32)
        # AIR is outside the body: the gel that couples the face to the skin, wherever a line
        # meets it (between the convex face and the skin, in a voxel staircase of the skin).
        self._impedance[Label.AIR] = COUPLING_GEL_IMPEDANCE_MRAYL
        log_attenuation = -2.0 * tables.attenuation_db_cm_mhz * probe.centre_frequency_mhz * self.axial_step_mm / 10.0
        self._log_attenuation = (log_attenuation / _DB_PER_NEPER).astype(f32)
        self._log_attenuation[Label.AIR] = 0.0  # coupling gel before the skin
        self._backscatter = (tables.backscatter * SCATTER_AMPLITUDE).astype(f32)
        self._is_bone = tables.is_bone
        # Per pair of neighbouring samples (previous label * 256 + label): the reflection at the
        # step and the natural log of the two-way amplitude left after the sample (transmission
        # through the step, the cortex loss on entering bone, the sample's attenuation).
        previous, current = np.meshgrid(np.arange(_TABLE_SIZE), np.arange(_TABLE_SIZE), indexing="ij")
        total = self._impedance[previous].astype(float) + self._impedance[current]
        reflection = np.divide(self._impedance[current] - self._impedance[previous].astype(float), total,
                               out=np.zeros(total.shape), where=total > 0)
        enters_bone = self._is_bone[current] & ~self._is_bone[previous]
        log_step = (np.log1p(-np.minimum(reflection**2, 1.0 - 1e-6)) + np.where(enters_bone, math.log(CORTEX_TRANSMISSION), 0.0)
                    + self._log_attenuation[current])
        self._pair_reflection = reflection.ravel().astype(f32)
        self._pair_log_step = log_step.ravel().astype(f32)
        self._pair_inverse_step = np.exp(-log_step).ravel().astype(f32)
        self._textures = anatomical_textures()

        # Elevation planes: Gauss-Hermite nodes (in units of sigma) of the Gaussian profile.
        nodes, weights = np.polynomial.hermite_e.hermegauss(elevation_planes)
        sigma_mm = self.elevation_fwhm_mm / _FWHM_PER_SIGMA
        self._elevation_offsets_px = nodes * sigma_mm / probe.pixel_spacing_mm
        self._elevation_weights = (weights / weights.sum()).astype(f32)

        samples_px = geometry.samples_px
        self._x_px = samples_px[..., 0].astype(f32)
        self._y_px = samples_px[..., 1].astype(f32)
        shape = self._x_px.shape
        psf = point_spread(probe, geometry)
        self._psf_sigmas, self._psf_peak = psf.sigmas, psf.peak_gain
        rng = np.random.default_rng(seed)
        # Scatterers fixed to the anatomy: a periodic 3D tile of complex Gaussian amplitudes, one
        # per SCATTERER_CELL_MM cube, scaled so the blurred speckle has the diffuse echo as RMS.
        tile = rng.standard_normal((2, _SCATTERER_TILE**3)).astype(f32)
        self._scatterer_tile = tile * f32(psf.peak_gain / psf.rms_gain / math.sqrt(2.0))
        self._noise = rng.standard_normal((2, *shape)).astype(f32) * f32(ELECTRONIC_NOISE_AMPLITUDE / math.sqrt(2.0))
        tgc_db = 2.0 * TGC_DB_CM_MHZ * probe.centre_frequency_mhz * geometry.depths_mm / 10.0
        self._gain_db = (tgc_db + SYSTEM_GAIN_DB).astype(f32)
        self._interface_sigmas = (
            INTERFACE_SMOOTHING_MM / float(np.median(geometry.lateral_step_mm)),
            INTERFACE_SMOOTHING_MM / self.axial_step_mm,
        )
        self._lateral_step_mm = geometry.lateral_step_mm.astype(f32)
        self._gather = geometry.gather.astype(np.int32)
        self._weights = geometry.weights.astype(f32)
        self._inside = geometry.inside
        self._cache_key: bytes | None = None
        self._tissue: dict[str, np.ndarray] = {}

    # -- the tissue part (depends on the pose only) ----------------------------------------
    def _labels(self, image_to_mri: np.ndarray) -> np.ndarray:
        """(E, L, S) uint8 workbench labels on the elevation planes (nearest voxel, AIR outside)."""
        image_to_voxel = (self._mri_to_voxel @ image_to_mri).astype(np.float32)
        offsets = self._elevation_offsets_px.astype(np.float32)[:, None, None]
        flat = None
        stride = 1
        for axis in range(3):
            row = image_to_voxel[axis]
            base = row[0] * self._x_px + (row[1] * self._y_px + (row[3] + np.float32(0.5)))
            index = base[None] + row[2] * offsets
            np.clip(index, 0.0, self._size_ijk[axis] - 1, out=index)
            index = index.astype(np.int32)
            flat = index if flat is None else flat + index * np.int32(stride)
            stride *= self._size_ijk[axis]
        return self._volume[flat]

    def _tissue_echoes(self, image_to_mri: np.ndarray) -> dict[str, np.ndarray]:
        labels = self._labels(image_to_mri)  # (E, L, S)
        centre = self.elevation_planes // 2
        wide = labels.astype(np.uint16)
        pair = np.empty_like(wide)  # previous label * 256 + label; the first sample has no step
        pair[..., 0] = wide[..., 0] * np.uint16(_TABLE_SIZE + 1)
        np.left_shift(wide[..., :-1], 8, out=pair[..., 1:])
        pair[..., 1:] |= wide[..., 1:]
        beyond = np.cumsum(self._pair_log_step[pair], axis=-1, dtype=np.float32)
        transmitted = np.exp(beyond)  # two-way amplitude left after each sample
        reaching = transmitted * self._pair_inverse_step[pair]  # ... arriving at each sample
        incidence = self._incidence_factor(self._impedance[labels[centre]])
        weights = self._elevation_weights
        specular = np.tensordot(weights, reaching * self._pair_reflection[pair], axes=1) * incidence
        backscatter = self._backscatter[labels] * transmitted
        points_mri = self._plane_points_mri(image_to_mri)
        gain = np.ones(labels.shape[1:], dtype=np.float32)
        for mask, texture in self._textures:
            textured = mask[labels[centre]]
            gain[textured] = texture.gain(points_mri[textured])
        diffuse = np.sqrt(np.tensordot(weights, backscatter * backscatter, axes=1)) * gain
        cells = np.floor(points_mri * np.float32(1.0 / SCATTERER_CELL_MM)).astype(np.int32) & (_SCATTERER_TILE - 1)
        flat = (cells[..., 0] * _SCATTERER_TILE + cells[..., 1]) * _SCATTERER_TILE + cells[..., 2]
        return {
            "specular": specular.astype(np.float32),
            "diffuse": diffuse.astype(np.float32),
            "reaching": reaching[centre],
            "log_attenuation": self._log_attenuation[labels[centre]],
            "points_mri": points_mri,
            "scatterers": self._scatterer_tile[:, flat],
            "elevation_mri": image_to_mri[:3, 2].copy(),
        }

    def _plane_points_mri(self, image_to_mri: np.ndarray) -> np.ndarray:
        """(L, S, 3) float32 Mri positions (mm) of the line samples in the image plane.

        ``apply_affine`` written as float32 broadcasts over the two pixel coordinates (z = 0):
        this runs on every sample of every new pose.
        """
        matrix = image_to_mri.astype(np.float32)
        return matrix[:3, 3] + self._x_px[..., None] * matrix[:3, 0] + self._y_px[..., None] * matrix[:3, 1]

    def _incidence_factor(self, impedance: np.ndarray) -> np.ndarray:
        """(L, S) cos^2 of the angle between the beam and the interface normal (in-plane), as the phantom simulator."""
        smooth = ndimage.gaussian_filter(impedance, self._interface_sigmas, mode="nearest", truncate=2.5)
        axial = np.gradient(smooth, axis=1) / np.float32(self.axial_step_mm)
        lateral = np.gradient(smooth, axis=0) / self._lateral_step_mm
        axial *= axial
        return axial / np.maximum(axial + lateral * lateral, np.float32(1e-30))

    def tissue(self, image_to_mri) -> dict[str, np.ndarray]:
        """The tissue echoes of a pose (cached while the pose stays the same).

        Returns
        -------
        dict
            (L, S) float32 ``specular``, ``diffuse``, ``reaching`` (two-way amplitude reaching
            each sample of the central plane), ``log_attenuation`` (per sample, nepers), and
            ``points_mri`` (L, S, 3) float32 Mri mm of the central plane's samples.
        """
        matrix, _ = _image_frame(image_to_mri, self.probe)
        key = matrix.tobytes()
        if key != self._cache_key:
            self._tissue = self._tissue_echoes(matrix)
            self._cache_key = key
        return self._tissue

    # -- injectate and needle ----------------------------------------------------------------
    def _fluid_fraction(self, injectate, tissue: dict) -> np.ndarray | None:
        """(2, L, S) float32 0..1: the share of the elevational beam in fluid at each sample, and
        1 where the image plane itself is in fluid; None if there is no fluid in the beam.

        ``injectate.contains`` is asked on every elevation plane (only for samples near a
        bolus) and the answers are weighted like the tissue echoes, so a pool beside the plane
        shows partly, as the slice thickness makes it.
        """
        boluses = tuple(getattr(injectate, "boluses", ()))
        if not boluses:
            return None
        points_mri = tissue["points_mri"]
        across_mri = tissue["elevation_mri"]  # (3,) Mri mm per elevation pixel
        reach_mm = float(np.max(np.abs(self._elevation_offsets_px))) * self.probe.pixel_spacing_mm
        lo = np.min([np.asarray(b.centre_mri) - float(np.max(b.semi_axes_mm)) for b in boluses], axis=0) - reach_mm
        hi = np.max([np.asarray(b.centre_mri) + float(np.max(b.semi_axes_mm)) for b in boluses], axis=0) + reach_mm
        near = np.all((points_mri >= lo) & (points_mri <= hi), axis=-1)
        if not near.any():
            return None
        near_mri = points_mri[near].astype(float)
        share = np.zeros(len(near_mri), dtype=np.float32)
        central = np.zeros(len(near_mri), dtype=bool)
        for offset_px, weight in zip(self._elevation_offsets_px, self._elevation_weights, strict=True):
            inside = np.asarray(injectate.contains(near_mri + offset_px * across_mri), dtype=bool)
            share += weight * inside
            if abs(offset_px) < 1e-9:  # the image plane itself (the odd count's middle node)
                central = inside
        if not share.any():
            return None
        fraction = np.zeros((2, *near.shape), dtype=np.float32)
        fraction[0][near] = share
        fraction[1][near] = central
        return fraction

    def _add_fluid(self, fluid: np.ndarray, tissue: dict, specular: np.ndarray, diffuse: np.ndarray):
        """Specular and diffuse echoes with a share ``fluid[0]`` (L, S) of the beam in fluid.

        The rim echo is drawn where the pool's wall crosses the image plane (``fluid[1]``),
        weighted like the central plane: the steps between elevation planes are no interface.
        """
        reaching = tissue["reaching"]
        fraction, central = fluid
        # Shares summed over elevation planes may round a hair past 1: clip so the square root
        # below never sees a negative tissue share.
        fraction = np.clip(fraction, 0.0, 1.0)
        tissue_share = np.float32(1.0) - fraction
        # Posterior enhancement: the fluid does not attenuate as the tissue it displaced did.
        enhancement = np.exp(np.cumsum(-fraction * tissue["log_attenuation"], axis=1))
        specular = specular * tissue_share * enhancement
        fluid_diffuse = reaching * np.float32(FLUID_BACKSCATTER * SCATTER_AMPLITUDE)
        tissue_diffuse = diffuse * enhancement
        diffuse = np.sqrt(tissue_share * tissue_diffuse * tissue_diffuse + fraction * fluid_diffuse * fluid_diffuse)
        rim = np.zeros_like(specular)
        rim[:, 1:] = np.abs(np.diff(central, axis=1)) * np.max(self._elevation_weights)
        impedance = float(self._impedance[Label.ERECTOR_SPINAE])
        rim_reflection = abs(impedance - FLUID_IMPEDANCE_MRAYL) / (impedance + FLUID_IMPEDANCE_MRAYL)
        specular = specular + rim * np.float32(rim_reflection) * reaching * enhancement
        return specular, diffuse

    def needle_echoes(self, image_to_mri, needle, reaching: np.ndarray | None = None) -> np.ndarray:
        """(L, S) float32 specular echo amplitudes of the needle shaft and its comet tail.

        Each shaft point within the elevational beam lands on its nearest line sample with
        amplitude ``NEEDLE_REFLECTION * min(1, diameter / elevation FWHM) *
        needle_visibility(angle) * profile(distance from the plane) * reaching``; the angle is
        taken against the beam of that line (a convex probe sees a steep needle better at the
        fan's far side).
        """
        matrix, mri_to_image = _image_frame(image_to_mri, self.probe)
        geometry = self._geometry
        shape = geometry.samples_px.shape[:2]
        echoes = np.zeros(shape, dtype=np.float32)
        if needle is None or float(needle.depth_mm) <= 0.0:
            return echoes
        step_mm = 0.4 * min(self.axial_step_mm, float(np.min(geometry.lateral_step_mm[1:])))
        points_mri = needle.shaft_points_mri(step_mm=max(step_mm, 0.05))
        points_px = apply_affine(mri_to_image, points_mri)
        profile = _elevation_profile(points_px[:, 2] * self.probe.pixel_spacing_mm, self.elevation_fwhm_mm)
        keep = profile > _PROFILE_CUTOFF
        if not keep.any():
            return echoes
        points_px, profile = points_px[keep], profile[keep]
        line, sample, inside, beam_image = _fan_coordinates(self.probe, points_px[:, 0], points_px[:, 1], shape[1])
        if not inside.any():
            return echoes
        line, sample, profile, beam_image = line[inside], sample[inside], profile[inside], beam_image[inside]
        beam_image_3d = np.concatenate([beam_image, np.zeros((len(beam_image), 1))], axis=1)
        beam_mri = apply_linear(matrix, beam_image_3d) / self.probe.pixel_spacing_mm
        direction_mri = np.asarray(needle.direction_mri, dtype=float)
        angle_deg = np.degrees(np.arcsin(np.clip(np.abs(beam_mri @ direction_mri), 0.0, 1.0)))
        diameter_mm = 2.0 * float(getattr(needle, "radius_mm", 0.36))
        size = min(1.0, diameter_mm / self.elevation_fwhm_mm)
        amplitude = NEEDLE_REFLECTION * size * needle_visibility(angle_deg) * profile
        lines = np.rint(line).astype(np.int64)
        samples = np.rint(sample).astype(np.int64)
        if reaching is None:
            reaching = self.tissue(matrix)["reaching"]
        amplitude = (amplitude * reaching[lines, samples]).astype(np.float32)
        np.maximum.at(echoes, (lines, samples), amplitude)
        # Comet tail: reverberations inside the tube, one outer diameter apart along the line.
        spacing = max(1, int(round(diameter_mm / self.axial_step_mm)))
        tail = np.zeros_like(echoes)
        for order in range(1, COMET_TAIL_COUNT + 1):
            deeper = samples + order * spacing
            ok = deeper < shape[1]
            np.maximum.at(tail, (lines[ok], deeper[ok]), amplitude[ok] * np.float32(COMET_TAIL_DECAY**order))
        return np.maximum(echoes, tail)

    # -- the frame -------------------------------------------------------------------------------
    def render(self, image_to_mri, needle=None, injectate=None) -> np.ndarray:
        """One B-mode frame at ``image_to_mri`` with the needle and injectate, MF orientation.

        Parameters
        ----------
        image_to_mri : (4, 4) float array (or a Transform)
            ``ImageToMri``: MF pixels (column, row, 0) to Mri mm, pixels of ``probe.pixel_spacing_mm``
            (:func:`workbench.rehearsal.probe.image_to_mri`).
        needle : NeedleState, optional
            Needs ``depth_mm``, ``direction_mri``, ``radius_mm`` and ``shaft_points_mri(step_mm)``.
        injectate : InjectateState, optional
            Needs ``boluses`` (with ``centre_mri``, ``semi_axes_mm``) and ``contains(points_mri)``.

        Returns
        -------
        (probe.height_px, probe.width_px) uint8 array
            Row 0 nearest the transducer; 0 outside the fan.
        """
        tissue = self.tissue(image_to_mri)
        fluid = None if injectate is None else self._fluid_fraction(injectate, tissue)
        if fluid is None:
            if "echo" not in tissue:  # blurred once per pose
                tissue["echo"] = self._echo(tissue["specular"], tissue["diffuse"], tissue["scatterers"])
            real, imaginary = tissue["echo"]
        else:
            real, imaginary = self._echo(*self._add_fluid(fluid, tissue, tissue["specular"], tissue["diffuse"]),
                                         tissue["scatterers"])
        if needle is not None:
            needle_echo = self.needle_echoes(image_to_mri, needle, tissue["reaching"])
            real = real + self._blur(needle_echo)
        return self._to_frame(real, imaginary)

    def _blur(self, field: np.ndarray) -> np.ndarray:
        """The point-spread function (Gaussian pulse and beam), normalised to keep a point echo's peak."""
        blurred = ndimage.gaussian_filter(field, self._psf_sigmas, mode="nearest", truncate=3.0)
        blurred *= np.float32(1.0 / self._psf_peak)
        return blurred

    def _echo(self, specular: np.ndarray, diffuse: np.ndarray, scatterers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Real and imaginary parts of the received echo: specular echoes plus speckle, blurred by the PSF."""
        return self._blur(specular + scatterers[0] * diffuse), self._blur(scatterers[1] * diffuse)

    def _to_frame(self, real: np.ndarray, imaginary: np.ndarray) -> np.ndarray:
        real = real + self._noise[0]
        imaginary = imaginary + self._noise[1]
        power = real * real + imaginary * imaginary
        level_db = np.float32(10.0) * np.log10(np.maximum(power, np.float32(1e-24))) + self._gain_db
        range_db = np.float32(self.probe.dynamic_range_db)
        grey = np.clip((level_db + range_db) * (np.float32(255.0) / range_db), 0.0, 255.0)
        values = grey.ravel()[self._gather]
        values *= self._weights
        frame = np.zeros(self._inside.shape, dtype=np.uint8)
        frame[self._inside] = (values.sum(axis=0) + np.float32(0.5)).astype(np.uint8)
        return frame
