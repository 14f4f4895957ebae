"""T2-weighted 3D SPACE-like MRI synthesised from the phantom label map, written as DICOM.

:func:`synthesize_t2` images a :class:`~workbench.phantom.anatomy.Phantom` with a protocol
preset from :data:`PROTOCOLS`; :func:`write_dicom_series` writes any 3D image as an MR Image
Storage series (one file per slice) that :func:`workbench.io.dicom.load_dicom_series` reads
back with the same geometry and pixels. Positions are LPS mm (``Mri`` frame, docs/frames.md).

Signal model (docs/phantom.md)
------------------------------
1. Each label's relative T2-weighted signal from :data:`~workbench.phantom.labels.TISSUE`
   (values aimed at the contrasts measured on a real 3D T2 lumbar MRI, docs/phantom.md); the
   disc nucleus darkens with ``disc_degeneration`` (to 40 % at 1).
2. Texture on the label grid (seeded by the phantom's anatomy seed, so every MRI of one phantom
   shows the same texture): bone is a cortical shell ``CORTEX_THICKNESS_MM`` thick, partial-
   volumed per label voxel, around marrow (``MARROW_T2_SIGNAL``) modulated +-10 % by a smooth
   random field; paraspinal muscle fat (``muscle_fat_fraction`` on average) is concentrated in
   thin fat planes between fascicles (near the zero set of a smooth random field that drifts
   slowly along z, so the planes run craniocaudally) and along the borders between muscles.
3. Partial volume: the signal on the fine label grid is box-averaged over each MRI voxel's
   extent (slice thickness across, pixel size in plane) and sampled at the voxel centres.
4. A smooth multiplicative bias field (exponential of a random second-order polynomial over
   the field of view, about +-15 %, receive-coil sensitivity).
5. Rician noise: the magnitude of the signal plus complex Gaussian noise of standard deviation
   ``noise_sigma`` (so air is Rayleigh distributed, mean/std = 1.91).
6. Scaled so that CSF is about 2000 and stored as uint16 clipped to 12 bits (0..4095).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import format_number_as_ds
from scipy import ndimage

from workbench._atomic import atomic_open
from workbench.anatomy import BONE_LABELS, Label
from workbench.errors import DicomError, PhantomError
from workbench.phantom.anatomy import Phantom
from workbench.phantom.labels import CORTEX_THICKNESS_MM, MARROW_T2_SIGNAL, TISSUE

__all__ = [
    "MriProtocol",
    "PROTOCOLS",
    "MRI_SYNTHESIS_VERSION",
    "SKIN_MARGIN_MM",
    "synthesize_t2",
    "signal_lookup",
    "write_dicom_series",
]

#: Version of the signal model and protocol geometry: bump it whenever the same phantom, protocol
#: and seed would give different pixels or geometry (cached demo cases are keyed by it).
MRI_SYNTHESIS_VERSION = 2
#: Field of view behind the posterior skin, mm, over the planning region (both protocols).
SKIN_MARGIN_MM = 15.0
#: Field of view in front of the most anterior vertebral body voxel, mm ("seed-3d-space").
BODY_MARGIN_MM = 5.0
#: Planning region for the coverage: +-this many mm from the midline (x), and from this many mm
#: below the lowest to above the highest built vertebral body centre (z).
PLANNING_HALF_WIDTH_MM = 80.0
PLANNING_Z_MARGIN_MM = 20.0

#: Metadata key on synthesised images naming their protocol (read by :func:`write_dicom_series`).
PROTOCOL_METADATA_KEY = "workbench.mri.protocol"
_MUSCLES = (Label.ERECTOR_SPINAE, Label.MULTIFIDUS, Label.QUADRATUS_LUMBORUM, Label.PSOAS)
_CHUNK_SLICES = 48  # label slices per texture chunk (bounds the temporary arrays)
_MARROW_VARIATION = 0.12  # standard deviation of the marrow signal's smooth relative variation
_MARROW_GRAIN_MM = 1.0  # correlation length (Gaussian sigma) of that variation, mm
#: Gaussian sigma (z, y, x) of the random field whose zero set places the fat planes between
#: fascicles, mm: long craniocaudally like the fascicles, longer antero-posteriorly than across.
_FASCICLE_SIGMA_ZYX_MM = (15.0, 8.0, 1.5)
_FAT_PLANE_WIDTH = 0.2  # |field| scale of a fat plane (half-width about this x the x sigma)
_PRESENCE_SIGMA_MM = 6.0  # Gaussian sigma of the field that breaks the fat planes into streaks
_PRESENCE_LEVEL = 0.3  # fat planes only where the presence field exceeds this (38 % of the volume)
_DIFFUSE_FAT_SHARE = 0.3  # share of the muscle fat spread evenly; the rest lies in the planes
_BORDER_FAT_FRACTION = 0.6  # fat fraction of the label voxels on a border between two muscles
_NUCLEUS_DARKENING = 0.6  # fraction of the nucleus signal lost at full degeneration
_SIGNAL_TO_COUNTS = 2000.0  # relative signal 1 (CSF) -> stored value
_MAX_COUNT = 4095  # 12-bit range
_PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL")
_SYNTHETIC_DATE = "20000101"
_SYNTHETIC_TIME = "120000"

#: Image axes (columns i, rows j, slices k) as LPS unit vectors, by orientation.
_ORIENTATIONS = {
    "coronal": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),  # rows, not columns
    "axial": np.eye(3),
}


@dataclass(frozen=True)
class MriProtocol:
    """An MRI acquisition preset.

    Attributes
    ----------
    name : str
    orientation : str
        "coronal" (slices along +y, IOP [1, 0, 0, 0, 0, -1]) or "axial" (slices along +z).
    fov_mm : float or None
        Square in-plane field of view, mm; None covers the whole phantom.
    matrix : int or None
        In-plane matrix (square); None with ``fov_mm`` None.
    slice_thickness_mm : float
        Slice thickness and spacing, mm (also the in-plane pixel when ``matrix`` is None).
    n_slices : int or None
        Number of slices. None: with ``fov_mm`` None, the grid tiles the whole label map (and
        ``SKIN_MARGIN_MM`` of air behind it); with a field of view, the slab is as thick as
        needed to reach from ``BODY_MARGIN_MM`` in front of the vertebral bodies to
        ``SKIN_MARGIN_MM`` behind the posterior skin over the planning region.
    protocol_name, sequence_name, series_description : str
        DICOM ProtocolName, SequenceName and default SeriesDescription.
    repetition_time_ms, echo_time_ms : float
    echo_train_length : int
    noise_sigma : float
        Standard deviation of each complex noise channel, relative to the CSF signal.
    bias_amplitude : float
        Standard deviation of the log bias field coefficients.
    """

    name: str
    orientation: str
    fov_mm: float | None
    matrix: int | None
    slice_thickness_mm: float
    n_slices: int | None
    protocol_name: str
    sequence_name: str
    series_description: str
    repetition_time_ms: float = 1500.0
    echo_time_ms: float = 132.0
    echo_train_length: int = 69
    noise_sigma: float = 0.03
    bias_amplitude: float = 0.06


#: Protocol presets. "seed-3d-space" is the clinical study's sequence: coronal T2 3D SPACE,
#: FOV 420 mm, matrix 184 x 184 (2.283 mm pixels), slices of 1 mm. The study used 80 slices;
#: 80 mm cannot reach from the vertebral bodies to the posterior skin (the default demo case,
#: BMI 28, needs 159 slices with the margins), so the preset's slab is sized to the anatomy
#: (docs/phantom.md).
PROTOCOLS: dict[str, MriProtocol] = {
    "seed-3d-space": MriProtocol(
        name="seed-3d-space",
        orientation="coronal",
        fov_mm=420.0,
        matrix=184,
        slice_thickness_mm=1.0,
        n_slices=None,
        protocol_name="t2_space_cor",
        sequence_name="*spc3d1rr282ns",
        series_description="t2_space_cor_p2_iso",
    ),
    "isotropic-1mm": MriProtocol(
        name="isotropic-1mm",
        orientation="axial",
        fov_mm=None,
        matrix=None,
        slice_thickness_mm=1.0,
        n_slices=None,
        protocol_name="t2_space_tra_iso1",
        sequence_name="*spc3d1rr282ns",
        series_description="t2_space_tra_iso1mm",
    ),
}


# -- synthesis -------------------------------------------------------------------------------------


def synthesize_t2(phantom: Phantom, protocol: str = "seed-3d-space", seed: int = 0) -> sitk.Image:
    """A T2-weighted 3D SPACE-like MRI of ``phantom``.

    Parameters
    ----------
    phantom : Phantom
    protocol : str
        Key of :data:`PROTOCOLS`.
    seed : int
        Seeds the bias field and the noise; equal inputs give identical pixels.

    Returns
    -------
    SimpleITK.Image
        uint16 (12-bit values), LPS geometry of the protocol; the metadata key
        ``workbench.mri.protocol`` names the protocol.

    Notes
    -----
    "seed-3d-space" centres its 420 mm field of view on x = 0 and the middle of the built
    vertebrae in z; its coronal slab of 1 mm slices reaches from ``BODY_MARGIN_MM`` in front of
    the most anterior vertebral body voxel to ``SKIN_MARGIN_MM`` behind the most posterior skin
    point of the planning region (``|x| <= PLANNING_HALF_WIDTH_MM``, z within
    ``PLANNING_Z_MARGIN_MM`` of the built body centres): 159 slices for the default demo case
    (BMI 28). "isotropic-1mm" tiles the label map with 1 mm voxels and adds ``SKIN_MARGIN_MM``
    of air behind it.

    Raises
    ------
    PhantomError
        Unknown protocol, or a seed that is not a non-negative integer.
    """
    if protocol not in PROTOCOLS:
        raise PhantomError(f"unknown MRI protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PhantomError(f"MRI seed must be a non-negative integer, not {seed!r}")
    preset = PROTOCOLS[protocol]
    geometry = _geometry(phantom, preset)
    clean = _partial_volume_signal(phantom, geometry)
    rng = np.random.default_rng(seed)
    biased = clean * _bias_field(geometry.size_px, preset.bias_amplitude, rng)
    noisy = np.hypot(
        biased + rng.normal(0.0, preset.noise_sigma, biased.shape), rng.normal(0.0, preset.noise_sigma, biased.shape)
    )
    counts = np.clip(np.rint(noisy * _SIGNAL_TO_COUNTS), 0, _MAX_COUNT).astype(np.uint16)
    image = sitk.GetImageFromArray(counts)
    geometry.apply_to(image)
    image.SetMetaData(PROTOCOL_METADATA_KEY, preset.name)
    return image


@dataclass(frozen=True)
class _Geometry:
    """An MRI grid: size (i, j, k), spacing (i, j, k) mm, origin LPS mm, axes (3, 3) rows = i, j, k."""

    size_px: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: np.ndarray
    axes: np.ndarray

    def apply_to(self, image: sitk.Image) -> None:
        image.SetSpacing([float(v) for v in self.spacing_mm])
        image.SetOrigin([float(v) for v in self.origin_lps_mm])
        image.SetDirection([float(v) for v in self.axes.T.ravel()])  # direction columns = axes


def _geometry(phantom: Phantom, preset: MriProtocol) -> _Geometry:
    axes = _ORIENTATIONS[preset.orientation]
    if preset.fov_mm is None:
        return _covering_geometry(phantom.labels, preset.slice_thickness_mm, axes)
    if preset.orientation != "coronal":
        raise PhantomError(f"protocol {preset.name!r}: a field-of-view slab must be coronal")
    pixel = preset.fov_mm / preset.matrix
    front_y_mm, back_y_mm = _slab_span_y_mm(phantom)
    n_slices = preset.n_slices or int(np.ceil((back_y_mm - front_y_mm) / preset.slice_thickness_mm)) + 1
    size = (preset.matrix, preset.matrix, n_slices)
    spacing = (pixel, pixel, preset.slice_thickness_mm)
    centres = np.array(list(phantom.vertebra_centres_lps.values()))
    centre = np.array([0.0, (front_y_mm + back_y_mm) / 2, centres[:, 2].mean()])
    half_extent = (np.array(size) - 1) / 2 * np.array(spacing)
    return _Geometry(size, spacing, centre - axes.T @ half_extent, axes)


def planning_skin_y_mm(phantom: Phantom) -> float:
    """Most posterior y of the skin over the planning region, mm (LPS).

    The planning region is ``|x| <= PLANNING_HALF_WIDTH_MM`` and z from
    ``PLANNING_Z_MARGIN_MM`` below the lowest to as far above the highest built vertebral body
    centre, sampled every 2 mm.
    """
    centres_z_mm = np.array([c[2] for c in phantom.vertebra_centres_lps.values()])
    x_mm = np.arange(-PLANNING_HALF_WIDTH_MM, PLANNING_HALF_WIDTH_MM + 1e-9, 2.0)
    z_mm = np.arange(centres_z_mm.min() - PLANNING_Z_MARGIN_MM, centres_z_mm.max() + PLANNING_Z_MARGIN_MM + 1e-9, 2.0)
    return float(np.nanmax(phantom.skin_surface_y_mm(x_mm[None, :], z_mm[:, None])))


def _slab_span_y_mm(phantom: Phantom) -> tuple[float, float]:
    """(front, back) y of the "seed-3d-space" slab, mm: ``BODY_MARGIN_MM`` in front of the most
    anterior vertebral body label voxel, ``SKIN_MARGIN_MM`` behind :func:`planning_skin_y_mm`."""
    labels = sitk.GetArrayViewFromImage(phantom.labels)
    rows = np.nonzero(np.any(labels == int(Label.VERTEBRAL_BODY), axis=(0, 2)))[0]
    if rows.size == 0:
        raise PhantomError("the phantom's label map holds no vertebral body; cannot place the MRI slab")
    fine = phantom.labels.GetSpacing()[1]
    front_y_mm = phantom.labels.GetOrigin()[1] + (rows[0] - 0.5) * fine - BODY_MARGIN_MM
    return front_y_mm, planning_skin_y_mm(phantom) + SKIN_MARGIN_MM


def _covering_geometry(labels: sitk.Image, spacing_mm: float, axes: np.ndarray) -> _Geometry:
    """An axis-aligned grid of ``spacing_mm`` voxels tiling the label map's extent, extended by
    ``SKIN_MARGIN_MM`` posteriorly (+y: air behind the skin, whose label map ends 5 mm behind it)."""
    fine = labels.GetSpacing()[0]
    box_lo = np.array(labels.GetOrigin()) - fine / 2
    extent = np.array(labels.GetSize()) * fine + np.array([0.0, SKIN_MARGIN_MM, 0.0])
    size = tuple(int(n) for n in np.floor(extent / spacing_mm + 1e-6))
    return _Geometry(size, (spacing_mm,) * 3, box_lo + spacing_mm / 2, axes)


def signal_lookup(phantom: Phantom) -> np.ndarray:
    """(256,) float32 mean relative T2 signal per label: muscles with the phantom's mean muscle fat
    fraction mixed in, the nucleus darkened by its disc degeneration, bone labels at the marrow
    value (the texture of :func:`synthesize_t2` redistributes muscle fat into fat planes and
    puts a cortical shell around the marrow, see the module notes)."""
    table = _base_table(phantom)
    fat = TISSUE[Label.FAT].t2_signal
    for muscle in _MUSCLES:
        table[int(muscle)] += phantom.muscle_fat_fraction * (fat - table[int(muscle)])
    return table


def _base_table(phantom: Phantom) -> np.ndarray:
    """(256,) float32 signal per label before texture: fat-free muscle, bone labels = marrow."""
    table = np.zeros(256, dtype=np.float32)
    for label, tissue in TISSUE.items():
        table[int(label)] = tissue.t2_signal
    table[int(Label.DISC_NUCLEUS)] *= 1.0 - _NUCLEUS_DARKENING * phantom.disc_degeneration
    for label in BONE_LABELS:
        table[int(label)] = MARROW_T2_SIGNAL
    return table


def _partial_volume_signal(phantom: Phantom, geometry: _Geometry) -> np.ndarray:
    """Noise-free signal on the MRI grid, numpy order (k, j, i), float32."""
    labels = phantom.labels
    fine = labels.GetSpacing()[0]
    origin = np.array(labels.GetOrigin())
    # Box filter width per LPS axis (x, y, z), in fine voxels.
    mri_spacing_lps = np.abs(geometry.axes.T) @ np.array(geometry.spacing_mm)
    widths = np.maximum(1, np.rint(mri_spacing_lps / fine).astype(int))
    corners = _grid_corners(geometry)
    margin = (widths + 2) * fine
    lo = np.floor((corners.min(axis=0) - margin - origin) / fine).astype(int)
    hi = np.ceil((corners.max(axis=0) + margin - origin) / fine).astype(int) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, labels.GetSize())
    out_shape = tuple(reversed(geometry.size_px))
    if np.any(hi <= lo):
        return np.zeros(out_shape, dtype=np.float32)
    array = sitk.GetArrayViewFromImage(labels)[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    signal = _fine_signal(array, phantom, lo)
    for axis_lps, width in enumerate(widths):
        if width > 1:
            ndimage.uniform_filter1d(signal, int(width), axis=2 - axis_lps, output=signal, mode="constant")
    # Output index (k, j, i) -> input index (z, y, x) of the cropped fine grid.
    axis_order = (2, 1, 0)  # numpy axis -> LPS axis, and output numpy axis -> image axis (k, j, i)
    matrix = np.zeros((3, 3))
    offset = np.zeros(3)
    for a, lps in enumerate(axis_order):
        for b, image_axis in enumerate(axis_order):
            matrix[a, b] = geometry.axes[image_axis, lps] * geometry.spacing_mm[image_axis] / fine
        even_shift = 0.5 if widths[lps] % 2 == 0 else 0.0  # uniform_filter1d centres even windows half a voxel low
        offset[a] = (geometry.origin_lps_mm[lps] - origin[lps]) / fine - lo[lps] + even_shift
    return ndimage.affine_transform(signal, matrix, offset, output_shape=out_shape, order=1, mode="constant", cval=0.0)


def _fine_signal(labels: np.ndarray, phantom: Phantom, lo: np.ndarray) -> np.ndarray:
    """Signal on the label grid, numpy order (z, y, x), float32, for the crop of the label map
    whose first voxel is label index ``lo`` (x, y, z): table lookup, then the bone and muscle
    texture of the module notes (in chunks of ``_CHUNK_SLICES`` slices, to bound the memory)."""
    fine_mm = phantom.labels.GetSpacing()[0]
    fields = _TextureFields(phantom, lo)
    bone_table = np.zeros(256, dtype=bool)
    bone_table[[int(v) for v in BONE_LABELS]] = True
    fat_fraction = np.zeros(256, dtype=np.float32)
    fat_fraction[[int(m) for m in _MUSCLES]] = phantom.muscle_fat_fraction
    table = _base_table(phantom)
    signal = np.empty(labels.shape, dtype=np.float32)
    bone_box, muscle_box = _BoxAccumulator(), _BoxAccumulator()
    for z0 in range(0, labels.shape[0], _CHUNK_SLICES):  # lookups index with intp: chunk the index copies
        part = labels[z0 : z0 + _CHUNK_SLICES]
        signal[z0 : z0 + _CHUNK_SLICES] = table[part]
        bone_box.add(bone_table[part], z0)
        muscle_box.add((fat_fraction > 0)[part], z0)
    bone_box, muscle_box = bone_box.box(), muscle_box.box()
    if bone_box is not None:
        _add_bone_texture(signal, labels, bone_table, bone_box, fine_mm, fields)
    if muscle_box is not None:
        _add_muscle_fat(signal, labels, fat_fraction, muscle_box, fields)
    return signal


class _TextureFields:
    """Smooth unit-variance random fields for the texture, seeded by the phantom's anatomy seed.

    Each is a periodic block of Gaussian-filtered white noise (filtered with wrap-around, so it
    tiles seamlessly) looked up at label voxel indices modulo its size (:meth:`on_box`): marrow
    grain at the label spacing (period 40 mm); the fascicle field at 1 mm (or the label spacing
    if coarser), anisotropic (sigma ``_FASCICLE_SIGMA_ZYX_MM``), period 96 x 64 x 128 mm
    (x, y, z); where fat planes are present (a field above ``_PRESENCE_LEVEL``, bool) at 4 mm,
    period 128 mm.
    """

    def __init__(self, phantom: Phantom, lo: np.ndarray):
        fine_mm = phantom.labels.GetSpacing()[0]
        seed = int(getattr(getattr(phantom, "parameters", None), "seed", 0))
        rng = np.random.default_rng([seed, 0x7E2])
        self._fine_mm, self._lo = fine_mm, np.asarray(lo)
        n = max(8, int(round(40.0 / fine_mm)))
        self.marrow = (_periodic_field(rng, (n, n, n), (_MARROW_GRAIN_MM / fine_mm,) * 3), fine_mm)
        coarse_mm = max(1.0, fine_mm)
        size = tuple(max(8, int(round(v / coarse_mm))) for v in (128.0, 64.0, 96.0))
        sigma = tuple(v / coarse_mm for v in _FASCICLE_SIGMA_ZYX_MM)
        self.fascicles = (_periodic_field(rng, size, sigma), coarse_mm)
        presence = _periodic_field(rng, (32, 32, 32), (_PRESENCE_SIGMA_MM / 4.0,) * 3) > _PRESENCE_LEVEL
        self.presence = (presence, 4.0)

    def on_box(self, field: tuple[np.ndarray, float], box: tuple[slice, slice, slice]) -> np.ndarray:
        """``field`` on the voxels of ``box`` (slices z, y, x of the crop), (z, y, x), its dtype."""
        block, block_mm = field
        scale = self._fine_mm / block_mm
        out = block
        for axis, part in enumerate(box):  # one axis at a time: each gather is cheap but the last
            index = np.floor((self._lo[2 - axis] + np.arange(part.start, part.stop)) * scale).astype(np.int64)
            out = np.take(out, index % block.shape[axis], axis=axis)
        return out


def _periodic_field(rng: np.random.Generator, shape_zyx: tuple[int, ...], sigma_px: tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise with wrap-around, scaled to unit standard deviation, float32."""
    noise = rng.standard_normal(shape_zyx).astype(np.float32)
    field = ndimage.gaussian_filter(noise, [max(s, 0.5) for s in sigma_px], mode="wrap")
    return field / max(float(field.std()), 1e-6)


def _add_bone_texture(signal, labels, bone_table, box, fine_mm, fields) -> None:
    """Bone voxels (``bone_table[labels]``) in ``box``: marrow x (1 + ``_MARROW_VARIATION`` x grain
    field), mixed with the cortical value by the voxel's cortex fraction: label voxels 1, 2, ...
    voxels deep (chessboard) in the bone are cortex over the part of their depth range
    [n s, (n + 1) s) that lies within ``CORTEX_THICKNESS_MM`` of the surface (partial volume on the
    label grid). Chunks along z carry a halo of as many slices as layers, so they agree with one pass."""
    fractions = []
    while len(fractions) * fine_mm < CORTEX_THICKNESS_MM:
        fractions.append(np.float32(min(1.0, (CORTEX_THICKNESS_MM - len(fractions) * fine_mm) / fine_mm)))
    halo = len(fractions)
    cortex = np.float32(TISSUE[Label.VERTEBRAL_BODY].t2_signal)
    for z0 in range(box[0].start, box[0].stop, _CHUNK_SLICES):
        z1 = min(z0 + _CHUNK_SLICES, box[0].stop)
        za, zb = max(box[0].start, z0 - halo), min(box[0].stop, z1 + halo)
        layer = bone_table[labels[za:zb, box[1], box[2]]].view(np.uint8)
        core = slice(z0 - za, z1 - za)
        bone = layer[core].astype(bool)
        cortex_fraction = np.zeros(bone.shape, dtype=np.float32)
        for fraction in fractions:
            inner = ndimage.minimum_filter(layer, size=3, mode="nearest")
            cortex_fraction += fraction * (layer[core] > inner[core])  # bone in this layer, not in the next
            layer = inner
        chunk = (slice(z0, z1), box[1], box[2])
        sub = signal[chunk]
        marrow = fields.on_box(fields.marrow, chunk)
        marrow *= np.float32(_MARROW_VARIATION)
        marrow += np.float32(1.0)
        marrow *= sub  # bone voxels hold MARROW_T2_SIGNAL from the table
        marrow += cortex_fraction * (cortex - marrow)
        marrow -= sub
        marrow *= bone  # 0 outside the bone: leaves those voxels as they are
        sub += marrow


def _add_muscle_fat(signal, labels, fat_fraction, box, fields) -> None:
    """Voxels in ``box`` whose label has a fat fraction (``fat_fraction``, (256,) per label): the
    fat-free signal mixed with fat by a local fat fraction whose mean is the label's: a diffuse
    share, fat planes near the zero set of the fascicle field where the presence field exceeds
    ``_PRESENCE_LEVEL`` (broken, craniocaudal streaks), and ``_BORDER_FAT_FRACTION`` on the
    borders between two different such labels (in plane, so z chunks need no halo)."""
    mean_plane = float(np.mean(np.exp(-((fields.fascicles[0] / _FAT_PLANE_WIDTH) ** 2))))
    mean_plane *= float(np.mean(fields.presence[0]))
    textured = fat_fraction > 0
    fat = np.float32(TISSUE[Label.FAT].t2_signal)
    for z0 in range(box[0].start, box[0].stop, _CHUNK_SLICES):
        chunk = (slice(z0, min(z0 + _CHUNK_SLICES, box[0].stop)), box[1], box[2])
        sub_labels, sub_signal = labels[chunk], signal[chunk]
        mask = textured[sub_labels]
        plane = fields.on_box(fields.fascicles, chunk)
        plane *= np.float32(1.0 / _FAT_PLANE_WIDTH)
        np.square(plane, out=plane)
        np.negative(plane, out=plane)
        np.exp(plane, out=plane)
        plane *= fields.on_box(fields.presence, chunk)
        plane *= np.float32((1.0 - _DIFFUSE_FAT_SHARE) / mean_plane)
        plane += np.float32(_DIFFUSE_FAT_SHARE)
        plane *= fat_fraction[sub_labels]  # local fat fraction; 0 outside the textured labels
        border = np.zeros_like(mask)  # a different textured label next door (in plane, 4-neighbours)
        for axis in (1, 2):
            before = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
            after = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
            differ = (sub_labels[before] != sub_labels[after]) & mask[before] & mask[after]
            border[before] |= differ
            border[after] |= differ
        np.maximum(plane, np.float32(_BORDER_FAT_FRACTION), out=plane, where=border)
        np.clip(plane, 0.0, 1.0, out=plane)
        sub_signal += plane * (fat - sub_signal)


class _BoxAccumulator:
    """Bounding box of a 3D mask given in chunks along its first axis."""

    def __init__(self):
        self._z: list[int] = []
        self._yx: np.ndarray | None = None

    def add(self, mask: np.ndarray, z0: int) -> None:
        """Add chunk ``mask`` (z, y, x) whose first slice is slice ``z0`` of the whole."""
        hits = np.nonzero(np.any(mask, axis=(1, 2)))[0]
        if hits.size:
            self._z += [z0 + int(hits[0]), z0 + int(hits[-1])]
            yx = np.any(mask, axis=0)
            self._yx = yx if self._yx is None else self._yx | yx

    def box(self) -> tuple[slice, slice, slice] | None:
        """Slices (z, y, x) of the smallest box holding every True voxel, or None."""
        if not self._z:
            return None
        rows, cols = np.nonzero(np.any(self._yx, axis=1))[0], np.nonzero(np.any(self._yx, axis=0))[0]
        return (
            slice(min(self._z), max(self._z) + 1),
            slice(int(rows[0]), int(rows[-1]) + 1),
            slice(int(cols[0]), int(cols[-1]) + 1),
        )


def _grid_corners(geometry: _Geometry) -> np.ndarray:
    """(8, 3) LPS centres of the corner voxels."""
    ext = (np.array(geometry.size_px) - 1) * np.array(geometry.spacing_mm)
    steps = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * ext
    return geometry.origin_lps_mm + steps @ geometry.axes


def _bias_field(size_px: tuple[int, int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a second-order polynomial in coordinates normalised to -1..1 over the grid,
    coefficients N(0, amplitude); numpy order (k, j, i), float32."""
    i, j, k = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in size_px)
    ci, cj, ck, cii, cjj, ckk, cij, cik, cjk = rng.normal(0.0, amplitude, 9)
    k3, j3, i3 = k[:, None, None], j[None, :, None], i[None, None, :]
    log_bias = (
        ci * i3
        + cj * j3
        + ck * k3
        + cii * i3**2
        + cjj * j3**2
        + ckk * k3**2
        + cij * i3 * j3
        + cik * i3 * k3
        + cjk * j3 * k3
    )
    return np.exp(log_bias).astype(np.float32)


# -- DICOM ----------------------------------------------------------------------------------------


def write_dicom_series(
    image: sitk.Image,
    out_dir: str | os.PathLike,
    *,
    series_description: str,
    patient_position: str = "HFP",
    case_id: str = "SYNTHETIC-0001",
    seed: int = 0,
    series_number: int = 1,
) -> list[Path]:
    """Write a 3D image as an MR Image Storage series, one file per slice (``IM0001.dcm``...).

    Explicit VR Little Endian, 16-bit unsigned pixels. Geometry from the image: slice k lies at
    ``ImagePositionPatient = origin + k * spacing_k * direction[:, 2]``,
    ``ImageOrientationPatient`` = the first two direction columns, ``PixelSpacing`` = (row
    spacing, column spacing) = (spacing_j, spacing_i), ``SpacingBetweenSlices`` = spacing_k.
    Integer images that fit 0..65535 are stored as is; other values are mapped onto 0..65535
    with RescaleSlope/RescaleIntercept (written only then). Identifiers are synthetic:
    PatientName = PatientID = ``case_id``, fixed dates (2000-01-01), UIDs ``2.25.<n>`` from a
    hash of the case, seed and series (StudyInstanceUID and FrameOfReferenceUID shared by every
    series of a case and seed). Protocol tags come from :data:`PROTOCOLS` when the image
    carries the ``workbench.mri.protocol`` metadata of :func:`synthesize_t2`.

    Returns
    -------
    list of pathlib.Path
        The files, in slice order. Each is written atomically.

    Raises
    ------
    DicomError
        Not a 3D scalar image; a left-handed direction; non-finite values; an unknown patient
        position; an empty or over-long description or case id; ``out_dir`` not empty.
    """
    array, slope, intercept = _stored_pixels(image)
    _check_header_values(series_description, case_id, patient_position)
    folder = Path(out_dir)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DicomError("output folder exists and is not empty", folder)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if np.linalg.det(direction) < 0:
        raise DicomError("image direction is left-handed; DICOM slices stack along row x column cosines")
    protocol = (
        PROTOCOLS.get(image.GetMetaData(PROTOCOL_METADATA_KEY)) if image.HasMetaDataKey(PROTOCOL_METADATA_KEY) else None
    )
    template = _series_template(image, series_description, patient_position, case_id, seed, series_number, protocol)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    template.BitsStored = 12 if array.max() <= _MAX_COUNT else 16
    template.HighBit = template.BitsStored - 1
    if slope != 1.0 or intercept != 0.0:
        template.RescaleSlope, template.RescaleIntercept, template.RescaleType = _ds(slope), _ds(intercept), "US"
    low, high = np.percentile(array, [1.0, 99.5]) * slope + intercept
    template.WindowCenter, template.WindowWidth = _ds(round((low + high) / 2, 3)), _ds(max(1.0, round(high - low, 3)))
    paths = []
    for k in range(array.shape[0]):
        ds = _slice_dataset(template, array[k], k, origin + k * spacing[2] * direction[:, 2], direction[:, 2])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid("sop", case_id, seed, series_description, k)
        path = folder / f"IM{k + 1:04d}.dcm"
        with atomic_open(path, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
        paths.append(path)
    return paths


def _stored_pixels(image: sitk.Image) -> tuple[np.ndarray, float, float]:
    """(k, rows, columns) uint16 array, RescaleSlope, RescaleIntercept."""
    if not isinstance(image, sitk.Image) or image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomError("write_dicom_series needs a 3D scalar SimpleITK image")
    values = sitk.GetArrayViewFromImage(image)
    if values.size == 0:
        raise DicomError("image is empty")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise DicomError("image holds non-finite values (NaN or infinity)")
    low, high = float(values.min()), float(values.max())
    if values.dtype.kind in "ui" and low >= 0 and high <= 65535:
        return values.astype(np.uint16), 1.0, 0.0
    if values.dtype.kind in "ui" and high - low <= 65535:
        return (values.astype(np.int64) - int(low)).astype(np.uint16), 1.0, low
    slope = (high - low) / 65535.0 if high > low else 1.0
    stored = np.rint((values.astype(np.float64) - low) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16), slope, low


def _check_header_values(series_description: str, case_id: str, patient_position: str) -> None:
    for name, value in (("series_description", series_description), ("case_id", case_id)):
        if not isinstance(value, str) or not value.strip() or len(value) > 64 or "\\" in value:
            raise DicomError(f"{name} must be 1-64 characters without a backslash, not {value!r}")
    if patient_position not in _PATIENT_POSITIONS:
        raise DicomError(f"unknown patient position {patient_position!r}; use one of {', '.join(_PATIENT_POSITIONS)}")


def _uid(*parts) -> str:
    """A deterministic UID under the 2.25 (UUID-derived integer) root."""
    digest = hashlib.sha256("|".join(str(p) for p in ("workbench-phantom",) + parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _series_template(
    image: sitk.Image,
    series_description: str,
    patient_position: str,
    case_id: str,
    seed: int,
    series_number: int,
    protocol: MriProtocol | None,
) -> Dataset:
    """Attributes shared by every slice of the series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _SYNTHETIC_DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _SYNTHETIC_TIME
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "workbench"
    ds.ManufacturerModelName = "synthetic lumbar phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic lumbar spine phantom"
    ds.SeriesDescription = series_description
    ds.PatientName = case_id
    ds.PatientID = case_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "LSPINE"
    ds.ImageComments = "Synthetic image generated by workbench; not a patient"
    ds.MRAcquisitionType = "3D"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP", "OSP"]
    ds.ScanOptions = ""
    ds.MagneticFieldStrength = "3"
    ds.ImagedNucleus = "1H"
    ds.PatientPosition = patient_position
    if protocol is not None:
        ds.ProtocolName = protocol.protocol_name
        ds.SequenceName = protocol.sequence_name
        ds.RepetitionTime = _ds(protocol.repetition_time_ms)
        ds.EchoTime = _ds(protocol.echo_time_ms)
        ds.EchoTrainLength = protocol.echo_train_length
        ds.SliceThickness = _ds(protocol.slice_thickness_mm)
    else:
        ds.ProtocolName = series_description
        ds.SliceThickness = _ds(image.GetSpacing()[2])
    spacing = image.GetSpacing()
    ds.SpacingBetweenSlices = _ds(spacing[2])
    ds.StudyInstanceUID = _uid("study", case_id, seed)
    ds.SeriesInstanceUID = _uid("series", case_id, seed, series_description)
    ds.FrameOfReferenceUID = _uid("frame", case_id, seed)
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    ds.ImageOrientationPatient = [_ds(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.GetSize()[1], image.GetSize()[0]
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    return ds


def _slice_dataset(
    template: Dataset, pixels: np.ndarray, k: int, position_lps: np.ndarray, normal: np.ndarray
) -> Dataset:
    """Slice ``k``: the template plus its file meta, position and pixels."""
    ds = Dataset()
    ds.update(template)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in position_lps]
    ds.SliceLocation = _ds(float(position_lps @ normal))
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds
