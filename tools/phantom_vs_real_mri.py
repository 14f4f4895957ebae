"""Compare the demo case's synthetic T2 MRI with a real T2 lumbar MRI: contrasts and a figure.

The real image is ``shared/data/mri-nifti-sct-t2-lumbar/t2_lumbar.nii.gz`` (Spinal Cord Toolbox
tutorial data, MIT; a 38 mm sagittal slab at 1 mm, TE 120 ms), stored RAS and read here as LPS
(``SimpleITK.DICOMOrient(image, "LPS")``: voxel index i -> +x left, j -> +y posterior, k -> +z
superior). Its tissue ROIs are boxes of LPS voxel indices chosen by looking at the slices
(:data:`REAL_ROIS_LPS_INDEX`); the phantom's are its label masks on the MRI grid, eroded by one
voxel (marrow: two) so that partial volume with neighbours stays out. Contrast = mean ROI
signal / mean CSF signal (and / mean muscle signal).

Usage::

    python tools/phantom_vs_real_mri.py                  # prints the table, writes docs/img/phantom_vs_real_t2.png
    python tools/phantom_vs_real_mri.py --no-figure --real ../shared/data/mri-nifti-sct-t2-lumbar/t2_lumbar.nii.gz
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "mri-nifti-sct-t2-lumbar" / "t2_lumbar.nii.gz"
DEFAULT_FIGURE = REPO / "docs" / "img" / "phantom_vs_real_t2.png"

#: ROIs on the real image, inclusive LPS voxel index ranges (i0, i1, j0, j1, k0, k1) after
#: reorienting to LPS; the mid-sagittal slice is i = 12.
REAL_ROIS_LPS_INDEX: dict[str, tuple[int, int, int, int, int, int]] = {
    "CSF": (11, 13, 165, 169, 52, 70),  # dural sac behind the body between the 4th and 5th disc seen (cauda equina inside)
    "muscle": (27, 33, 192, 200, 55, 90),  # paramedian multifidus/erector spinae, 15-21 mm off the midline
    "subcutaneous fat": (20, 35, 204, 205, 38, 42),  # the 2-3 mm posterior fat band over the muscles
    "disc nucleus": (10, 14, 141, 151, 69, 72),  # nucleus of the disc at k = 71
    "vertebral marrow": (10, 14, 142, 160, 80, 94),  # body between the discs at k = 71 and k = 103
}
#: Where the figure cuts the real image: mid-sagittal index i and an axial index k through a body.
REAL_SAGITTAL_I, REAL_AXIAL_K = 12, 60
TISSUES = tuple(REAL_ROIS_LPS_INDEX)


def load_real(path: str | Path = DEFAULT_REAL) -> sitk.Image:
    """The real MRI as float32, reoriented to LPS."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"real MRI not found: {path} (see shared/data/README.md)")
    return sitk.Cast(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS"), sitk.sitkFloat32)


def real_means(image: sitk.Image) -> dict[str, float]:
    """Mean signal in each ROI of :data:`REAL_ROIS_LPS_INDEX`."""
    values = sitk.GetArrayViewFromImage(image)  # (k, j, i)
    return {
        name: float(values[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1].mean())
        for name, (i0, i1, j0, j1, k0, k1) in REAL_ROIS_LPS_INDEX.items()
    }


def phantom_masks(mri: sitk.Image, phantom) -> dict[str, np.ndarray]:
    """Label-defined ROIs on the MRI grid (numpy order), eroded so partial volume stays out."""
    from workbench.anatomy import Label

    labels = sitk.GetArrayFromImage(
        sitk.Resample(phantom.labels, mri, sitk.Transform(), sitk.sitkNearestNeighbor, int(Label.AIR))
    )

    def interior(values, iterations=1):
        return ndimage.binary_erosion(np.isin(labels, [int(v) for v in values]), iterations=iterations)

    return {
        "CSF": interior([Label.CSF]),
        "muscle": interior([Label.ERECTOR_SPINAE, Label.MULTIFIDUS]),
        "subcutaneous fat": interior([Label.FAT]),
        "disc nucleus": interior([Label.DISC_NUCLEUS]),
        "vertebral marrow": interior([Label.VERTEBRAL_BODY], 2),
    }


def phantom_means(mri: sitk.Image, phantom) -> dict[str, float]:
    """Mean signal of the synthetic MRI in each label-defined ROI."""
    values = sitk.GetArrayViewFromImage(mri).astype(np.float64)
    return {name: float(values[mask].mean()) for name, mask in phantom_masks(mri, phantom).items()}


def contrasts(means: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Per tissue: (mean / CSF mean, mean / muscle mean)."""
    return {name: (value / means["CSF"], value / means["muscle"]) for name, value in means.items()}


def demo_phantom(spacing_mm: float = 0.5):
    """The default demo case's phantom (:data:`workbench.phantom.democase.DEFAULT_DEMO_CASE`)."""
    from workbench.phantom.anatomy import build_phantom
    from workbench.phantom.democase import DEFAULT_DEMO_CASE as spec

    return build_phantom(spec.spine_parameters(spacing_mm=spacing_mm)), spec


def _plane(image: sitk.Image, origin_lps, u_lps, v_lps, size_uv) -> np.ndarray:
    """Linear resampling of ``image`` on a 1 mm plane: rows along ``v_lps``, columns along ``u_lps``."""
    u, v = np.asarray(u_lps, float), np.asarray(v_lps, float)
    w = np.cross(u, v)
    reference = sitk.Image(int(size_uv[0]), int(size_uv[1]), 1, sitk.sitkFloat32)
    reference.SetOrigin([float(c) for c in origin_lps])
    reference.SetDirection([float(c) for c in np.column_stack([u, v, w]).ravel()])
    plane = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(plane)[0]


def draw(real: sitk.Image, real_csf: float, mri: sitk.Image, phantom, phantom_csf: float, out: Path) -> None:
    """Sagittal and axial slices of both, each divided by its CSF mean, window 0..1.3 (same window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ox, oy, oz = real.GetOrigin()
    real_x = ox + REAL_SAGITTAL_I
    real_z = oz + REAL_AXIAL_K
    real_sag = _plane(real, (real_x, oy + 100, oz + 200), (0, 1, 0), (0, 0, -1), (157, 201)) / real_csf
    real_ax = _plane(real, (ox, oy + 100, real_z), (1, 0, 0), (0, 1, 0), (38, 157)) / real_csf
    mri_f = sitk.Cast(mri, sitk.sitkFloat32)
    body_z = float(phantom.vertebra_centres_lps["L3"][2])
    top = max(c[2] for c in phantom.vertebra_centres_lps.values()) + 25.0
    skin = float(phantom.skin_surface_y_mm(0.0, body_z))
    y0 = skin + 25.0 - 200.0
    ph_sag = _plane(mri_f, (0.0, y0, top), (0, 1, 0), (0, 0, -1), (200, 240)) / phantom_csf
    ph_ax = _plane(mri_f, (-110.0, y0, body_z), (1, 0, 0), (0, 1, 0), (221, 200)) / phantom_csf
    fig, axes = plt.subplots(
        1, 4, figsize=(16, 6.6), gridspec_kw={"width_ratios": [200, 157, 221, 38 * 1.0]}, constrained_layout=True
    )
    panels = (
        (ph_sag, "phantom (demo case), mid-sagittal"),
        (real_sag, "real T2 (SCT lumbar), mid-sagittal"),
        (ph_ax, "phantom, axial through L3 body"),
        (real_ax, "real, axial\n(38 mm slab)"),
    )
    for ax, (values, title) in zip(axes, panels):
        ax.imshow(values, cmap="gray", vmin=0.0, vmax=1.3, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:2]:
        ax.text(2, 8, "A", color="yellow", fontsize=9)
        ax.text(ax.get_xlim()[1] - 10, 8, "P", color="yellow", fontsize=9)
        ax.plot([5, 55], [ax.get_ylim()[0] - 6] * 2, color="yellow", lw=2)
        ax.text(5, ax.get_ylim()[0] - 10, "50 mm", color="yellow", fontsize=8)
    axes[2].text(2, 10, "R", color="yellow", fontsize=9)
    axes[2].text(axes[2].get_xlim()[1] - 10, 10, "L", color="yellow", fontsize=9)
    fig.suptitle("T2: signal / mean CSF signal, window 0 to 1.3 for all panels (1 mm resampling)", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=str(DEFAULT_REAL), help="real T2 lumbar NIfTI")
    parser.add_argument("--figure", default=str(DEFAULT_FIGURE), help="PNG to write")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--age", type=float, default=None, help="also measure the demo phantom at this age")
    args = parser.parse_args(argv)

    from workbench.phantom.anatomy import build_phantom
    from workbench.phantom.mri import synthesize_t2

    real = load_real(args.real)
    real_m = real_means(real)
    real_c = contrasts(real_m)
    phantom, spec = demo_phantom()
    start = time.perf_counter()
    mri = synthesize_t2(phantom, spec.protocol, seed=spec.seed)
    synth_s = time.perf_counter() - start
    means = phantom_means(mri, phantom)
    phantom_c = contrasts(means)
    columns = [("real", real_c), (f"demo phantom (age {spec.age_years:g})", phantom_c)]
    if args.age is not None:
        aged = build_phantom(dataclasses.replace(phantom.parameters, age_years=args.age))
        aged_mri = synthesize_t2(aged, spec.protocol, seed=spec.seed)
        columns.append((f"phantom age {args.age:g}", contrasts(phantom_means(aged_mri, aged))))
    print(f"synthesize_t2({spec.protocol!r}) of the demo phantom: {synth_s:.2f} s, size {mri.GetSize()}")
    headers = [f"{name} / CSF" for name, _ in columns] + [f"{name} / muscle" for name, _ in columns]
    print("| tissue | " + " | ".join(headers) + " |")
    print("|---" * (1 + 2 * len(columns)) + "|")
    for tissue in TISSUES:
        cells = [f"{c[tissue][0]:.2f}" for _, c in columns] + [f"{c[tissue][1]:.2f}" for _, c in columns]
        print(f"| {tissue} | " + " | ".join(cells) + " |")
    print("phantom / real, signal / CSF: " + ", ".join(f"{t} {phantom_c[t][0] / real_c[t][0]:.2f}" for t in TISSUES))
    if not args.no_figure:
        draw(real, real_m["CSF"], mri, phantom, means["CSF"], Path(args.figure))
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
