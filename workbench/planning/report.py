"""A self-contained, printable HTML report of a plan (images embedded as base64 PNG).

Per trajectory: the fused ultrasound/MRI view at 50 % blend in the plane of the needle (skin at
the top, as on ultrasound) with the target and the path drawn, where a sweep covers the target
(:data:`COVERED_FRACTION` of the pixels within :data:`COVERED_RADIUS_MM` of it hold ultrasound;
elsewhere the section says "no sweep covers this target" and shows no fused image), the same plane of the MRI alone,
axial, coronal and sagittal MRI slices through the target (radiological view), the numbers and
the safety status with every check, and every structure group checked or not checked (and why). A
blocked trajectory gets a red BLOCKED banner with its reasons, on its section and in one banner at the
top of the report; a trajectory whose structures were not all checked gets an INCOMPLETE banner
(never "ok"), on its section and at the top, naming them; a plan without a registration says so
at the top and shows no ultrasound. Images are resampled from volumes in the ``Mri`` frame (LPS mm); see
docs/frames.md and docs/planning.md.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy import ndimage

from workbench._atomic import atomic_write_text
from workbench.planning.model import Plan, Trajectory
from workbench.planning.safety import SafetyReport

__all__ = ["VolumeSampler", "covers_target", "encode_png", "fused_grey", "render_report", "write_report"]

#: Half the side of every view, mm, and its pixel size, mm.
VIEW_HALF_SIZE_MM = 60.0
VIEW_PIXEL_MM = 0.5
#: Shown size of every view in the report, CSS pixels (1 mm = 360 / 120 = 3 px).
VIEW_DISPLAY_PX = 360
#: The fused view is shown when at least this fraction of the pixels within this radius of the
#: target hold ultrasound (a sweep covers the target); else "no sweep covers this target".
COVERED_RADIUS_MM = 5.0
COVERED_FRACTION = 0.5
#: Length of the scale bar drawn under each view, mm.
SCALE_BAR_MM = 20.0
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
_PATH_COLOUR = np.array([0, 220, 255], dtype=float)
_TARGET_COLOUR = np.array([255, 40, 40], dtype=float)
# (title, column direction, row direction) in LPS: radiological views, anterior / superior at the top.
_ORTHOGONAL_VIEWS = (
    ("Axial MRI through the target", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    ("Coronal MRI through the target", (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    ("Sagittal MRI through the target", (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
)


@dataclass(frozen=True)
class VolumeSampler:
    """A scalar volume in the ``Mri`` frame for resampling planes.

    Attributes
    ----------
    voxels : (K, J, I) float array
        Indexed [k, j, i].
    mri_voxel_to_mri : (4, 4) float array
        Voxel index (i, j, k) to LPS mm (``MriVoxelToMri``, docs/frames.md).
    """

    voxels: np.ndarray
    mri_voxel_to_mri: np.ndarray

    @classmethod
    def from_volume(cls, volume) -> "VolumeSampler":
        """From a :class:`~workbench.io.volume.LoadedVolume`."""
        import SimpleITK as sitk

        return cls(sitk.GetArrayFromImage(volume.image).astype(np.float32), volume.mri_voxel_to_mri.matrix)

    @classmethod
    def from_reconstruction(cls, result) -> "VolumeSampler":
        """From a :class:`~workbench.reconstruction.reconstruct.ReconstructionResult` built in the ``Mri`` frame."""
        matrix = np.diag([*result.grid.spacing_mm, 1.0])
        matrix[:3, 3] = result.grid.origin_mm
        return cls(result.volume.astype(np.float32), matrix)

    def plane(self, centre_lps: np.ndarray, columns_lps: np.ndarray, rows_lps: np.ndarray) -> np.ndarray:
        """Resample the square plane around ``centre_lps`` spanned by unit ``columns_lps``/``rows_lps``.

        Returns a (N, N) float array (N = 2 * VIEW_HALF_SIZE_MM / VIEW_PIXEL_MM), NaN outside the volume.
        """
        offsets = np.arange(-VIEW_HALF_SIZE_MM, VIEW_HALF_SIZE_MM, VIEW_PIXEL_MM)
        rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
        points = centre_lps + cols[..., None] * columns_lps + rows[..., None] * rows_lps
        ijk = (points.reshape(-1, 3) - self.mri_voxel_to_mri[:3, 3]) @ np.linalg.inv(self.mri_voxel_to_mri[:3, :3]).T
        values = ndimage.map_coordinates(self.voxels, ijk[:, ::-1].T, order=1, mode="constant", cval=np.nan)
        return values.reshape(rows.shape)


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 array to PNG bytes (8-bit RGB, no interlace)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _normalised(values: np.ndarray) -> np.ndarray:
    """Window to the 1st-99.5th percentile of the finite values; NaN -> 0. Returns 0..1."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    low, high = np.percentile(finite, [1.0, 99.5])
    return np.nan_to_num(np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0))


def _to_pixel(points_lps: np.ndarray, centre, columns, rows) -> np.ndarray:
    """(N, 2) (row, column) pixel positions of LPS points projected onto a view."""
    relative = np.atleast_2d(points_lps) - centre
    return np.stack([relative @ rows, relative @ columns], axis=1) / VIEW_PIXEL_MM + VIEW_HALF_SIZE_MM / VIEW_PIXEL_MM


def _draw(rgb: np.ndarray, trajectory: Trajectory, centre, columns, rows) -> None:
    """Draw the path (entry to target) and a ring around the target onto ``rgb`` in place."""
    entry, target = np.array(trajectory.entry_lps_mm), np.array(trajectory.target_lps_mm)
    steps = np.linspace(0.0, 1.0, int(trajectory.insertion_depth_mm / VIEW_PIXEL_MM * 2) + 2)
    path = _to_pixel(entry + np.outer(steps, target - entry), centre, columns, rows)
    angles = np.linspace(0.0, 2 * np.pi, 64)
    ring = _to_pixel(target, centre, columns, rows) + 8.0 * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    for pixels, colour in ((path, _PATH_COLOUR), (ring, _TARGET_COLOUR)):
        for dr, dc in ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)):  # 3 px wide, visible at print size
            rc = np.rint(pixels).astype(int) + np.array([dr, dc])
            inside = np.all((rc >= 0) & (rc < rgb.shape[:2]), axis=1)
            rgb[rc[inside, 0], rc[inside, 1]] = colour


def _covered(us: np.ndarray) -> np.ndarray:
    """Pixels of a resampled ultrasound plane that hold ultrasound (finite, above 0)."""
    return np.isfinite(us) & (np.nan_to_num(us) > 0)


def covers_target(us_plane: np.ndarray) -> bool:
    """Whether a sweep covers the target at the centre of a view: :data:`COVERED_FRACTION` of the
    pixels within :data:`COVERED_RADIUS_MM` of the view's centre hold ultrasound."""
    size = us_plane.shape[0]
    offsets = (np.arange(size) - size / 2.0) * VIEW_PIXEL_MM
    near = np.hypot(offsets[:, None], offsets[None, :]) <= COVERED_RADIUS_MM
    return bool(_covered(us_plane)[near].mean() >= COVERED_FRACTION)


def fused_grey(mri: np.ndarray, us: np.ndarray) -> np.ndarray:
    """A 50/50 blend of the MRI's and the ultrasound's grey values (each windowed 0-255) where the
    ultrasound covers a pixel, the MRI's grey elsewhere; (H, W) float 0-255."""
    grey = _normalised(mri) * 255.0
    return np.where(_covered(us), 0.5 * grey + 0.5 * _normalised(us) * 255.0, grey)


def _image(mri: np.ndarray, us: np.ndarray | None, trajectory, centre, columns, rows) -> bytes:
    grey = (_normalised(mri) * 255.0 if us is None else fused_grey(mri, us))[..., None]
    rgb = np.repeat(grey, 3, axis=2)
    _draw(rgb, trajectory, centre, columns, rows)
    return encode_png(np.clip(rgb, 0, 255).astype(np.uint8))


def _direction_letters(direction) -> str:
    """Radiological letters of an LPS direction (the largest component, then the second when >= 0.3)."""
    d = np.asarray(direction, dtype=float) / max(float(np.linalg.norm(direction)), 1e-12)
    order = np.argsort(-np.abs(d))
    letters = [_LETTERS[axis][0 if d[axis] >= 0 else 1] for axis in order[:2] if abs(d[axis]) >= 0.3 or axis == order[0]]
    return "".join(letters)


def _needle_plane(trajectory: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """Columns and rows of the in-plane view: rows along the needle (skin at the top), columns toward superior."""
    rows = trajectory.direction_lps
    towards = np.array([0.0, 0.0, 1.0]) if abs(rows[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    columns = towards - (towards @ rows) * rows
    return columns / np.linalg.norm(columns), rows


def _figure(title: str, png: bytes | None, columns=None, rows=None) -> str:
    """A labelled view: the image with orientation letters on its sides and a scale bar, and its caption.

    ``png`` None: no image, the caption says why (e.g. no sweep covers the target).
    """
    caption = html.escape(title)
    if png is None:
        return f'<figure class="missing"><div class="no-image">{caption}</div><figcaption>{caption}</figcaption></figure>'
    data = base64.b64encode(png).decode("ascii")
    labels = ""
    if columns is not None and rows is not None:
        c, r = np.asarray(columns, float), np.asarray(rows, float)
        for side, direction in (("left", -c), ("right", c), ("top", -r), ("bottom", r)):
            labels += f'<span class="letter {side}">{_direction_letters(direction)}</span>'
    bar_px = SCALE_BAR_MM / (2 * VIEW_HALF_SIZE_MM) * VIEW_DISPLAY_PX
    labels += f'<span class="scale" style="width:{bar_px:.0f}px">{SCALE_BAR_MM:g} mm</span>'
    return (f'<figure><div class="view"><img alt="{caption}" src="data:image/png;base64,{data}">{labels}</div>'
            f"<figcaption>{caption}</figcaption></figure>")


def _number_rows(plan: Plan, trajectory: Trajectory) -> list[tuple[str, str]]:
    g = plan.geometry(trajectory)
    rows = [
        ("Target", f"{trajectory.structure} — LPS ({', '.join(f'{v:.1f}' for v in trajectory.target_lps_mm)}) mm"),
        ("Skin entry", f"LPS ({', '.join(f'{v:.1f}' for v in trajectory.entry_lps_mm)}) mm"),
        ("Needle", trajectory.needle.label),
        ("Insertion depth", f"{g.insertion_depth_mm:.1f} mm"),
        ("Needle left outside the skin", f"{g.remaining_needle_mm:.1f} mm"),
        (
            "Angle to axial / sagittal / coronal plane",
            f"{g.angle_to_axial_deg:.1f}° / {g.angle_to_sagittal_deg:.1f}° / {g.angle_to_coronal_deg:.1f}°",
        ),
        ("Angle to skin normal", "—" if g.angle_to_skin_normal_deg is None else f"{g.angle_to_skin_normal_deg:.1f}°"),
        ("Injectate", f"{trajectory.injectate_ml:g} mL {trajectory.drugs}".strip()),
        ("Approach", trajectory.approach or "—"),
    ]
    if g.angle_to_reference_planes_deg is not None:
        angles = g.angle_to_reference_planes_deg
        rows.append(("Entry in Reference", f"({', '.join(f'{v:.1f}' for v in g.entry_reference_mm)}) mm"))
        rows.append(("Angle to Reference xy / yz / xz plane", f"{angles['xy']:.1f}° / {angles['yz']:.1f}° / {angles['xz']:.1f}°"))
    return rows


def _banner(status: str, title: str, lines: list[str]) -> str:
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<div class="banner {status}"><p>{html.escape(title)}</p><ul>{items}</ul></div>'


def _safety_html(safety: SafetyReport | None) -> str:
    if safety is None:
        return _banner("warning", "Safety: NOT CHECKED", ["no safety report was given for this trajectory"])
    banner = ""
    if safety.status == "blocked":
        banner = _banner("blocked", "BLOCKED — do not use this trajectory", list(safety.reasons))
    missing = safety.unchecked_structures
    if missing:
        banner += _banner(
            "incomplete", f"INCOMPLETE — {len(missing)} structure group(s) not checked: do not read the status as safe",
            [f"{name}: {item.detail}" for name, item in missing.items()],
        )
    coverage = "".join(
        f'<tr><td>{html.escape(item.name)}</td><td class="{"ok" if item.checked else "not-checked"}">'
        f'{"CHECKED" if item.checked else "NOT CHECKED (" + html.escape(str(item.reason)) + ")"}</td>'
        f"<td>{html.escape(item.detail)}</td></tr>"
        for item in safety.structures
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in safety.reasons) or "<li>no finding</li>"
    checks = "".join(
        f'<tr><td>{html.escape(c.name)}</td><td class="{c.status.replace(" ", "-")}">{html.escape(c.status.upper())}</td>'
        f"<td>{html.escape(c.detail)}</td></tr>"
        for c in safety.checks
    )
    clearances = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'&gt; search distance' if v is None else f'{v:.1f} mm'}</td></tr>"
        for name, v in safety.clearance_mm.items()
    )
    return (
        f'{banner}<p class="status {safety.status}">Safety: {safety.status.upper()}</p><ul>{reasons}</ul>'
        + (f"<table><tr><th>Check</th><th>Result</th><th>Detail</th></tr>{checks}</table>" if checks else "")
        + (f"<table><tr><th>Structure</th><th>Clearance</th></tr>{clearances}</table>" if clearances else "")
        + (f"<table><tr><th>Structure group</th><th>Checked</th><th>Detail</th></tr>{coverage}</table>" if coverage else "")
    )


def _trajectory_section(plan, trajectory, mri: VolumeSampler, us: VolumeSampler | None, safety) -> str:
    target = np.array(trajectory.target_lps_mm)
    midpoint = (target + np.array(trajectory.entry_lps_mm)) / 2.0
    columns, rows = _needle_plane(trajectory)
    mri_plane = mri.plane(midpoint, columns, rows)
    us_plane = None if us is None else us.plane(midpoint, columns, rows)
    figures = []
    if plan.registration is not None:  # without a registration nothing from the ultrasound is shown
        if us is None:
            figures.append(_figure("Needle plane: no fused view (no ultrasound volume to fuse)", None))
        elif not covers_target(us.plane(target, columns, rows)):
            figures.append(_figure("No fused view: no sweep covers this target", None))
        else:
            figures.append(_figure("Fused US/MRI, 50 % blend, needle plane (MRI alone outside the sweep)",
                                   _image(mri_plane, us_plane, trajectory, midpoint, columns, rows), columns, rows))
    figures.append(_figure("MRI alone, needle plane (skin at the top)",
                           _image(mri_plane, None, trajectory, midpoint, columns, rows), columns, rows))
    for title, cols, rws in _ORTHOGONAL_VIEWS:
        c, r = np.array(cols), np.array(rws)
        figures.append(_figure(f"{title}, path projected", _image(mri.plane(target, c, r), None, trajectory, target, c, r), c, r))
    numbers = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _number_rows(plan, trajectory))
    return (
        f'<section class="trajectory"><h2>{html.escape(trajectory.name)}</h2>'
        f'<table class="numbers">{numbers}</table>{_safety_html(safety)}'
        f'<div class="figures">{"".join(figures)}</div></section>'
    )


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #999; padding: 2px 6px; text-align: left; font-size: 10pt; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 360px; }
figure .view { position: relative; width: 360px; height: 360px; }
figure img { width: 360px; height: 360px; image-rendering: auto; display: block; }
figure .letter, figure .scale { position: absolute; color: #ffe066; font: bold 13pt sans-serif; text-shadow: 0 0 3px #000, 0 0 2px #000; }
figure .letter.left { left: 4px; top: 50%; transform: translateY(-50%); }
figure .letter.right { right: 4px; top: 50%; transform: translateY(-50%); }
figure .letter.top { top: 2px; left: 50%; transform: translateX(-50%); }
figure .letter.bottom { bottom: 2px; left: 50%; transform: translateX(-50%); }
figure .scale { right: 10px; bottom: 8px; border-top: 3px solid #fff; color: #fff; font-size: 9pt; text-align: center; padding-top: 1px; }
figure .no-image { width: 358px; height: 358px; border: 1px dashed #a86400; color: #a86400; display: flex; align-items: center;
  justify-content: center; text-align: center; font-size: 12pt; background: #fbf6ec; }
figcaption { font-size: 10pt; font-weight: bold; margin-top: 2px; }
.status { font-weight: bold; font-size: 12pt; }
.ok { color: #0a6b16; } .warning { color: #a86400; } .blocked { color: #b00000; } .not-checked { color: #a86400; }
.incomplete { color: #5a3d99; }
.banner { border: 3px solid; padding: 4px 10px; margin: 0.5em 0; font-weight: bold; }
.banner p { font-size: 14pt; margin: 0.2em 0; }
.banner.blocked { color: #fff; background: #b00000; border-color: #700000; }
.banner.warning { color: #111; background: #ffd27a; border-color: #a86400; }
.banner.incomplete { color: #111; background: #e4dcf5; border-color: #5a3d99; }
@media print { section.trajectory { page-break-after: always; } body { margin: 0; } }
"""


def _quality_text(registration) -> str:
    verdict = getattr(registration, "quality_verdict", None)
    if verdict is None:
        return "quality gate: not assessed (a landmark fit or a transform given by hand)"
    return f"quality gate: {verdict}"


def render_report(
    plan: Plan,
    mri: VolumeSampler,
    us: VolumeSampler | None = None,
    safety: Mapping[str, SafetyReport] | None = None,
) -> str:
    """The HTML text of the report (one section per trajectory)."""
    p = plan.provenance
    registration = plan.registration
    reg_text = "MISSING: the case has no registration" if registration is None else (
        f"{registration.method}"
        + ("" if registration.registration_id is None else f" (saved registration {registration.registration_id})")
        + f"; FRE {'not known' if registration.fre_mm is None else f'{registration.fre_mm:.2f} mm'}; "
        f"largest predicted TRE {'not known' if registration.tre_mm is None else f'{registration.tre_mm:.2f} mm'}; "
        + _quality_text(registration)
        + ("" if registration.quality_warning is None else f"; WARNING: {registration.quality_warning}")
    )
    header = (
        f"<h1>Puncture plan {html.escape(plan.plan_id)}</h1><p>{html.escape(plan.title)}</p>"
        f"<table><tr><th>Author</th><td>{html.escape(p.author) or '—'}</td></tr>"
        f"<tr><th>Created (UTC)</th><td>{html.escape(p.created_utc)}</td></tr>"
        f"<tr><th>Software</th><td>{html.escape(p.software)}</td></tr>"
        f"<tr><th>MRI digest</th><td>{html.escape(p.mri_digest or '—')}</td></tr>"
        f"<tr><th>Registration</th><td>{html.escape(reg_text)}</td></tr></table>"
        "<p>Views: radiological (patient left on the image right); needle-plane views have the skin at the top. "
        "Cyan: needle path (projected onto the axial, coronal and sagittal slices); red ring: target. "
        "Letters: patient directions (R/L, A/P, S/I) on each side of the image.</p>"
    )
    reports = {t.name: (safety or {}).get(t.name) for t in plan.trajectories}
    blocked = [(name, r) for name, r in reports.items() if r is not None and r.status == "blocked"]
    top = ""
    if blocked:
        lines = [f"{name}: {'; '.join(r.reasons)}" for name, r in blocked]
        top += _banner("blocked", f"BLOCKED — {len(blocked)} of {len(reports)} trajectories failed a safety check", lines)
    incomplete = [(name, r) for name, r in reports.items() if r is not None and r.unchecked_structures]
    if incomplete:
        lines = [f"{name}: not checked: {', '.join(f'{g} ({c.reason})' for g, c in r.unchecked_structures.items())}"
                 for name, r in incomplete]
        top += _banner("incomplete", f"INCOMPLETE — {len(incomplete)} of {len(reports)} trajectories were not checked "
                                     "against every structure", lines)
    unchecked = [name for name, r in reports.items() if r is None]
    if unchecked:
        top += _banner("warning", "Safety NOT CHECKED", [f"{name}: no safety report" for name in unchecked])
    if registration is not None and registration.quality_warning is not None:
        top += _banner("warning", "Registration doubtful", [registration.quality_warning])
    if registration is None:
        top += _banner("warning", "Registration missing", [
            "the case has no registration: positions in the Reference frame, the ITK transforms and the fused "
            "ultrasound views are omitted; register the MRI to the sweeps (notebook 03) and plan again"
        ])
    sections = "".join(_trajectory_section(plan, t, mri, us, reports[t.name]) for t in plan.trajectories)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Plan {html.escape(plan.plan_id)}</title>'
        f"<style>{_CSS}</style></head><body>{top}{header}{sections}</body></html>\n"
    )


def write_report(path: str | Path, plan: Plan, mri: VolumeSampler, us: VolumeSampler | None = None, safety=None) -> Path:
    """Write :func:`render_report` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, render_report(plan, mri, us, safety))
    return path
