"""Rehearsal panel (notebook 08 and its Voila page): probe, needle, injectate and score of a simulated block.

:class:`RehearsalController` (no UI) is a thin model over :class:`workbench.rehearsal.attempt.Attempt`
(the procedure: needle, events, injectate, metrics), :class:`workbench.rehearsal.imaging.RehearsalImager`
(the simulated B-mode) and :class:`workbench.rehearsal.probe.ProbePose` (where the probe sits on
the back). Every action (move the probe, insert, advance, withdraw, redirect, inject, finish) goes
through it, so tests drive a whole attempt without a kernel. After each action it renders the
B-mode at the probe's pose, the MRI resliced on the same pixel grid (trilinear) and their 50/50
blend, and turns the attempt's new events into messages for the trainee.

:class:`RehearsalPanel` is the ipywidgets view: probe sliders (along and across the back,
rotation, tilt) with *Snap to the planned needle plane* and *Follow the sweep*; needle controls
(entry, insert, advance/withdraw by 1 or 5 mm, redirect by an angle in or out of the image plane);
*Inject 1 mL* up to the plan's volume; *Finish* shows the metrics with their pass thresholds and
saves the attempt (``metrics.json`` and the recording) into ``<case>/rehearsals/<attempt id>/``,
published with one atomic rename. The three images are PNGs (``ipywidgets.Image``); a hidden JSON
hook (``wb-rehearsal-state``) gives tests the needle's pixels on the B-mode and the metrics.

On a teaching-library case (``workbench teach --library``) the panel adds a submit box: after
*Finish*, the trainee's pseudonym and *Submit attempt* store the attempt in the session's results
database as a ``rehearsal`` attempt (:meth:`RehearsalController.submit`, through
:func:`workbench.teaching.submit.submit_rehearsal`, as ``workbench submit --attempt`` does; the
database and session come from the app as on plan page 04, :mod:`workbench.widgets.teacher`), and
the box shows the score and findings.

The tip's position is known to the simulator and never printed for the trainee: the panel shows
the inserted length (the needle's depth marks) and the images only. All positions ``Mri`` (LPS mm).
"""

from __future__ import annotations

import html
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from workbench.widgets.session import WidgetError
from workbench.widgets.sweep import png_bytes  # the frames' PNG encoder (zlib level 1), re-exported

__all__ = [
    "ADVANCE_STEPS_MM",
    "EVENT_TEXT",
    "INJECT_STEP_ML",
    "PASS_THRESHOLDS",
    "RehearsalController",
    "RehearsalPanel",
    "png_bytes",
    "rehearsal_guidance",
    "with_depth_marks",
]

#: Needle steps of the advance/withdraw buttons, mm.
ADVANCE_STEPS_MM = (1.0, 5.0)
#: Volume of one press of the inject button, mL.
INJECT_STEP_ML = 1.0
#: Plan volume when the scene's expert path names none (the study: 6 mL per root), mL.
DEFAULT_PLAN_VOLUME_ML = 6.0
#: Share of ultrasound in the fused view, %.
FUSED_US_PERCENT = 50.0
#: Folder of a case bundle that holds the saved attempts.
REHEARSALS_DIR = "rehearsals"

#: Event type -> (severity, what the trainee reads). Severity: "warning" (orange) or "danger" (red).
EVENT_TEXT = {
    "bone_contact": ("warning", "Bone contact"),
    "nerve_contact": ("danger", "PARAESTHESIA: nerve root contact, withdraw"),
    "dura_puncture": ("danger", "DURA PUNCTURE: the tip is in the canal, withdraw"),
    "vessel_puncture": ("danger", "Vessel puncture: blood in the hub"),
    "kidney_puncture": ("danger", "Kidney puncture"),
    "intramuscular_injection": ("warning", "Intramuscular injection: the tip is in muscle"),
    "intravascular_injection": ("danger", "INTRAVASCULAR injection"),
    "epidural_injection": ("danger", "EPIDURAL injection"),
}


def rehearsal_guidance(session) -> str | None:
    """One line saying what the case lacks for a rehearsal (no label map, no target), else None.

    Parameters
    ----------
    session : CaseSession
    """
    if session.attachment_path("label_map") is None:
        return ("no label map yet: import or segment one in notebook 01 "
                "(the simulated ultrasound and the events come from it)")
    from workbench.case.readiness import ENTRY_STRUCTURE

    if not any(t.structure != ENTRY_STRUCTURE for t in session.case.targets):
        return "no target yet: place at least one target on the MRI (notebook 02)"
    return None


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12:
        raise WidgetError("a direction of zero length")
    return vector / norm


#: Depth marks drawn at the right edge of the images: every DEPTH_MARK_MM, longer every 5th, mm.
DEPTH_MARK_MM = 10.0


def with_depth_marks(image: np.ndarray, probe) -> np.ndarray:
    """A copy of an (H, W) or (H, W, 3) uint8 image in the probe's MF pixels with white depth marks
    at its right edge: 6 px every :data:`DEPTH_MARK_MM` of depth below the transducer face, 14 px
    every fifth (as on a scanner's screen)."""
    marked = np.array(image, dtype=np.uint8, copy=True)
    height, width = marked.shape[:2]
    spacing_mm = float(probe.pixel_spacing_mm)
    face_row = float(probe.transducer_origin_px[1])
    for k in range(int((height - face_row) * spacing_mm // DEPTH_MARK_MM) + 1):
        row = int(round(face_row + k * DEPTH_MARK_MM / spacing_mm))
        if 0 <= row < height:
            length = 14 if k % 5 == 0 else 6
            marked[max(row - 1, 0): row + 1, width - length:] = 255
    return marked


def _jsonable(value):
    """Metrics -> JSON values (numpy scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


class _MriReslicer:
    """The MRI sampled (trilinear) at the pixel centres of an image plane given by ``image_to_mri``."""

    def __init__(self, mri):
        import SimpleITK as sitk

        from workbench.frames import image_index_to_physical

        image = getattr(mri, "image", mri)
        self.voxels_kji = sitk.GetArrayFromImage(image).astype(np.float32)
        self.mri_voxel_to_mri = image_index_to_physical(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        sample = self.voxels_kji[:: max(1, self.voxels_kji.shape[0] // 16)]
        low, high = np.percentile(sample, [1.0, 99.5])
        self.window, self.level = float(max(high - low, 1e-6)), float((high + low) / 2.0)

    def on_plane(self, image_to_mri: np.ndarray, height_px: int, width_px: int, block_px: int = 2) -> np.ndarray:
        """(H, W) uint8: the MRI at pixel ``(col, row)`` = ``image_to_mri @ (col, row, 0, 1)``, black outside.

        Sampled once per ``block_px`` x ``block_px`` block of pixels, at the block's centre, and
        repeated over the block: B-mode pixels (about 0.3 mm) are far finer than MRI voxels, and
        a slider update then resamples a quarter of the pixels.
        """
        from scipy.ndimage import map_coordinates

        from workbench.widgets.slices import window_to_uint8

        image_to_ijk = np.linalg.inv(self.mri_voxel_to_mri) @ np.asarray(image_to_mri, dtype=float)
        offset = (block_px - 1) / 2.0
        columns = np.arange(0, width_px, block_px, dtype=np.float32) + np.float32(offset)
        rows = np.arange(0, height_px, block_px, dtype=np.float32) + np.float32(offset)
        coords = np.empty((3, len(rows), len(columns)), dtype=np.float32)
        for out_axis, ijk_axis in enumerate((2, 1, 0)):  # (k, j, i) order of the array
            a = image_to_ijk[ijk_axis]
            coords[out_axis] = np.float32(a[1]) * rows[:, None] + (np.float32(a[0]) * columns + np.float32(a[3]))[None, :]
        values = map_coordinates(self.voxels_kji, coords, order=1, mode="constant", cval=np.nan, prefilter=False)
        grey = window_to_uint8(np.nan_to_num(values, nan=self.level - self.window / 2.0), self.window, self.level)
        return np.repeat(np.repeat(grey, block_px, axis=0), block_px, axis=1)[:height_px, :width_px]


class RehearsalController:
    """One rehearsal attempt on a scene: probe pose, needle, injectate, events, images, score.

    Parameters
    ----------
    scene : workbench.rehearsal.scene.RehearsalScene
        The case's label map, MRI, targets and expert paths (``Mri`` frame, LPS mm).
    target_name : str, optional
        Which target to block; default the first of the scene's expert paths (else of its targets).
    probe : ProbeModel, optional
        Default the attempt's (a curvilinear C5-2-like probe).
    elevation_fwhm_mm : float, optional
        Elevational slice thickness of the simulated beam, mm (default the imager's own).
    seed : int
        Speckle seed of the simulated B-mode.

    Attributes
    ----------
    attempt : workbench.rehearsal.attempt.Attempt
    pose : workbench.rehearsal.probe.ProbePose
        Where the probe sits (Mri x/z of its centre on the skin, rotation and tilt in degrees).
    entry_mri : (3,) float array
        Skin entry of the next insertion, LPS mm (default the plan's).
    messages : list of dict
        ``{"type", "severity", "text", "time_s"}`` per event of the attempt, in order.
    images : dict
        ``"bmode"`` (H, W) uint8, ``"mri"`` (H, W) uint8 or None, ``"fused"`` (H, W) uint8 or None:
        the last render.
    result : AttemptResult or None
        Set by :meth:`finish`.
    """

    def __init__(self, scene, target_name: str | None = None, *, probe=None, elevation_fwhm_mm: float | None = None,
                 seed: int = 0):
        from workbench.rehearsal.imaging import RehearsalImager
        from workbench.rehearsal.probe import REHEARSAL_PROBE, SkinSurface

        self.scene = scene
        if not self.target_names(scene):
            raise WidgetError("the case has no target to rehearse: place one in notebook 02", scene.case_dir)
        self._probe_given = REHEARSAL_PROBE if probe is None else probe
        self._elevation_given = elevation_fwhm_mm
        self.skin = SkinSurface(scene.label_map)
        self.render_ms: list[float] = []
        self._reslicer = None if scene.mri is None else _MriReslicer(scene.mri)
        self.imager = None
        self.new_attempt(target_name)
        self.elevation_fwhm_mm = float(self.attempt.elevation_fwhm_mm)
        self.imager = RehearsalImager(scene.label_map, self.probe, elevation_fwhm_mm=self.elevation_fwhm_mm,
                                      muscle_fat_fraction=float(scene.muscle_fat_fraction), seed=int(seed))
        self.set_pose(self.pose)

    def new_attempt(self, target_name: str | None = None) -> None:
        """Start a new attempt (on ``target_name``, default the current target, else the first):
        needle out, no injectate, no events, entry = the plan's, probe snapped to the plan's plane."""
        from workbench.rehearsal.attempt import Attempt

        names = self.target_names(self.scene)
        name = target_name or getattr(self, "target_name", None) or names[0]
        if name not in names:
            raise WidgetError(f"no target {name!r}; targets: {', '.join(names)}", self.scene.case_dir)
        self.target_name = name
        kwargs = {} if self._elevation_given is None else {"elevation_fwhm_mm": float(self._elevation_given)}
        self.attempt = Attempt(self.scene, self.target_name, probe=self._probe_given, **kwargs)
        self.probe = self.attempt.probe
        self.messages: list[dict] = []
        self.images: dict = {}
        self.result = None
        self.metrics: dict | None = None
        self.saved_to: Path | None = None
        self.submitted: dict | None = None
        self.entry_mri = self.plan_entry_mri.copy()
        self.pose = self.snap_pose()
        if self.imager is not None:
            self.set_pose(self.pose)

    # -- the scene --------------------------------------------------------------------------
    @staticmethod
    def target_names(scene) -> list[str]:
        """Targets that can be rehearsed: those with an expert path first, then the other targets."""
        paths = list(getattr(scene, "expert_paths", {}) or {})
        return paths + [name for name in (getattr(scene, "targets_mri", {}) or {}) if name not in paths]

    @classmethod
    def from_case(cls, case_dir, target_name: str | None = None, **kwargs) -> "RehearsalController":
        """Load the scene of a case folder (:func:`workbench.rehearsal.scene.load_scene`) and open an attempt."""
        from workbench.rehearsal.scene import load_scene

        return cls(load_scene(case_dir), target_name, **kwargs)

    @property
    def expert_path(self):
        """The scene's :class:`ExpertPath` of the target, or None."""
        return (getattr(self.scene, "expert_paths", {}) or {}).get(self.target_name)

    @property
    def target_mri(self) -> np.ndarray:
        """(3,) LPS mm of the target."""
        path = self.expert_path
        if path is not None:
            return np.asarray(path.target_mri, dtype=float)
        return np.asarray(self.scene.targets_mri[self.target_name], dtype=float)

    @property
    def plan_entry_mri(self) -> np.ndarray:
        """(3,) LPS mm: the plan's skin entry, else the skin straight posterior to the target."""
        path = self.expert_path
        if path is not None:
            return np.asarray(path.entry_mri, dtype=float)
        target = self.target_mri
        return np.asarray(self.skin.point_mri(float(target[0]), float(target[2])), dtype=float)

    @property
    def plan_depth_mm(self) -> float:
        """Entry to target along the plan, mm."""
        return float(np.linalg.norm(self.target_mri - self.plan_entry_mri))

    @property
    def plan_volume_ml(self) -> float:
        """The plan's injectate volume, mL (default :data:`DEFAULT_PLAN_VOLUME_ML`)."""
        path = self.expert_path
        volume = getattr(path, "injectate_ml", None) if path is not None else None
        return float(volume) if volume else DEFAULT_PLAN_VOLUME_ML

    @property
    def needle_length_mm(self) -> float | None:
        path = self.expert_path
        return None if path is None else float(path.needle.length_mm)

    # -- probe ------------------------------------------------------------------------------
    def snap_pose(self):
        """The pose whose image plane holds the planned path from the current entry to the target."""
        from workbench.rehearsal.probe import snap_to_needle_plane

        return snap_to_needle_plane(self.entry_mri, self.target_mri, self.probe, self.skin)

    def snap(self) -> dict:
        """Put the probe on the planned needle plane; returns the images."""
        return self.set_pose(self.snap_pose())

    def image_to_mri(self, pose=None) -> np.ndarray:
        """(4, 4) ``ImageToMri`` of ``pose`` (default the current one): MF pixels -> LPS mm."""
        from workbench.rehearsal.probe import image_to_mri

        return np.asarray(image_to_mri(self.pose if pose is None else pose, self.probe, self.skin), dtype=float)

    def set_pose(self, pose=None, **changes) -> dict:
        """Move the probe (a whole ``ProbePose``, or some of its fields) and render.

        Parameters
        ----------
        pose : ProbePose, optional
        **changes
            Fields of ``ProbePose`` to change (``centre_x_mm``, ``centre_z_mm``, ``rotation_deg``, ``tilt_deg``...).
        """
        from dataclasses import replace

        pose = self.pose if pose is None else pose
        self.pose = replace(pose, **changes) if changes else pose
        self._image_to_mri = self.image_to_mri(self.pose)
        self.attempt.set_probe(self._image_to_mri)
        return self.render()

    def sweep_poses(self, count: int = 12, half_length_mm: float = 30.0) -> list:
        """Probe poses of a straight sweep head to foot over the current pose (``count`` poses,
        ``centre_z_mm`` from +``half_length_mm`` to -``half_length_mm``; the other fields kept), as
        :func:`workbench.rehearsal.probe.poses_along_sweep` interpolates a generated sweep."""
        from dataclasses import replace

        centre_z_mm = float(self.pose.centre_z_mm)
        return [replace(self.pose, centre_z_mm=float(centre_z_mm + dz))
                for dz in np.linspace(half_length_mm, -half_length_mm, int(count))]

    def set_plane(self, image_to_mri) -> dict:
        """Image through a plane given directly ((4, 4) ``ImageToMri`` in the probe's pixels), e.g. a
        frame of a recorded sweep; :attr:`pose` (the sliders) stays as it was."""
        self._image_to_mri = np.asarray(image_to_mri, dtype=float)
        self.attempt.set_probe(self._image_to_mri)
        return self.render()

    def recorded_sweep_planes(self, sweep_index: int = 0, count: int = 24) -> list[np.ndarray]:
        """``count`` planes, evenly spaced, of the case's recorded sweep in the MRI (``ImageToMri``, (4, 4)).

        Each tracked frame is placed with the case's registration (the accepted one, else the fit of
        its landmark pairs; :func:`~workbench.widgets.session.case_registration`) through
        :func:`workbench.rehearsal.probe.poses_along_sweep`. A recording whose pixels are not the
        rehearsal probe's is rescaled about the centre of its top row, so the simulated image keeps
        the recorded plane and transducer position.

        Raises
        ------
        WidgetError
            The case has no sweep, or no registration yet (says what to do).
        """
        from workbench.rehearsal.probe import poses_along_sweep
        from workbench.widgets.session import CaseSession, case_registration

        session = CaseSession(self.scene.case_dir)
        if not session.case.sweeps:
            raise WidgetError("the case has no recorded sweep to follow", self.scene.case_dir / "case.json")
        registration = case_registration(session)
        if registration.transform is None:
            raise WidgetError(f"to follow the recorded sweep: {registration.description}")
        sequence = session.sweep(sweep_index)
        planes = poses_along_sweep(sequence, image_to_probe=session.case.sweeps[sweep_index].image_to_probe,
                                   reference_to_mri=registration.transform)
        if not planes:
            raise WidgetError("no frame of the recorded sweep is tracked (all INVALID)", self.scene.case_dir)
        picks = np.unique(np.linspace(0, len(planes) - 1, min(int(count), len(planes))).round().astype(int))
        width_px = int(sequence.images_mf().shape[2]) if sequence.images is not None else self.probe.width_px
        return [self._in_probe_pixels(planes[i], width_px) for i in picks]

    def _in_probe_pixels(self, recorded_image_to_mri: np.ndarray, recorded_width_px: int) -> np.ndarray:
        """A recorded frame's ``ImageToMri`` re-expressed in the rehearsal probe's pixels: same plane and
        axes, the recorded top-centre pixel at the probe's transducer column on row 0, the probe's spacing."""
        recorded = np.asarray(recorded_image_to_mri, dtype=float)
        recorded_mm = float(np.linalg.norm(recorded[:3, 0]))
        probe_mm = float(self.probe.pixel_spacing_mm)
        if abs(recorded_mm - probe_mm) <= 1e-3 * probe_mm and recorded_width_px == self.probe.width_px:
            return recorded
        scale = probe_mm / recorded_mm
        probe_centre = np.array([self.probe.transducer_origin_px[0], 0.0])
        recorded_centre = np.array([(recorded_width_px - 1) / 2.0, 0.0])
        probe_to_recorded = np.eye(4)  # probe pixel p -> recorded pixel centre_r + scale (p - centre_p)
        probe_to_recorded[:3, :3] *= scale
        probe_to_recorded[:2, 3] = recorded_centre - scale * probe_centre
        return recorded @ probe_to_recorded

    # -- needle -----------------------------------------------------------------------------
    @property
    def needle(self):
        """The attempt's :class:`NeedleState`, or None before insertion."""
        return self.attempt.needle

    def entry_choices(self) -> dict[str, np.ndarray]:
        """Skin entries to choose from: the plan's, and the skin under the probe's centre."""
        choices = {"plan entry": self.plan_entry_mri}
        under = np.asarray(self.skin.point_mri(float(self.pose.centre_x_mm), float(self.pose.centre_z_mm)), dtype=float)
        choices["skin under the probe's centre"] = under
        return choices

    def choose_entry(self, entry_mri) -> None:
        """Skin entry of the next insertion, LPS mm (3,)."""
        entry = np.asarray(entry_mri, dtype=float).reshape(3)
        if not np.all(np.isfinite(entry)):
            raise WidgetError("the entry must be a finite point (LPS mm)")
        self.entry_mri = entry

    def insert(self, direction_mri=None) -> dict:
        """Put the needle on the skin at :attr:`entry_mri`, aimed at the target (or along ``direction_mri``)."""
        direction = _unit(self.target_mri - self.entry_mri if direction_mri is None else direction_mri)
        self.attempt.insert(self.entry_mri, direction)
        return self._after_action()

    def _require_needle(self, what: str):
        if self.attempt.needle is None:
            raise WidgetError(f"insert the needle before you {what}")
        return self.attempt.needle

    def advance(self, distance_mm: float) -> dict:
        """Advance the needle by ``distance_mm`` (> 0) along its shaft."""
        self._require_needle("advance it")
        self.attempt.advance(float(distance_mm))
        return self._after_action()

    def withdraw(self, distance_mm: float) -> dict:
        """Withdraw the needle by ``distance_mm`` (> 0)."""
        self._require_needle("withdraw it")
        self.attempt.withdraw(float(distance_mm))
        return self._after_action()

    def redirect_direction(self, angle_deg: float, plane: str = "in-plane") -> np.ndarray:
        """The needle direction turned by ``angle_deg`` (LPS unit vector, (3,)).

        ``plane="in-plane"`` turns it within the image plane, positive towards the image's right
        (+x, MF columns); ``"out-of-plane"`` turns it towards the image plane's normal (x cross y).
        """
        needle = self._require_needle("redirect it")
        direction = _unit(needle.direction_mri)
        x_axis = _unit(self._image_to_mri[:3, 0])
        y_axis = _unit(self._image_to_mri[:3, 1])
        towards = x_axis if plane == "in-plane" else _unit(np.cross(x_axis, y_axis))
        if plane not in ("in-plane", "out-of-plane"):
            raise WidgetError(f"plane must be 'in-plane' or 'out-of-plane', got {plane!r}")
        ortho = towards - (towards @ direction) * direction
        if np.linalg.norm(ortho) < 1e-6:  # the needle runs along that axis: turn towards the depth axis
            ortho = y_axis - (y_axis @ direction) * direction
        ortho = _unit(ortho)
        angle = np.radians(float(angle_deg))
        return _unit(np.cos(angle) * direction + np.sin(angle) * ortho)

    def redirect(self, angle_deg: float, plane: str = "in-plane") -> dict:
        """Turn the needle by ``angle_deg`` (:meth:`redirect_direction`)."""
        self.attempt.redirect(self.redirect_direction(angle_deg, plane))
        return self._after_action()

    def remaining_to_target_mm(self) -> float:
        """How much deeper the plan's target lies than the tip along the needle, mm (the simulator's
        knowledge: used by scripted attempts, never shown to the trainee)."""
        needle = self._require_needle("measure")
        return float((self.target_mri - needle.tip_mri) @ _unit(needle.direction_mri))

    def advance_to_target(self, step_mm: float = ADVANCE_STEPS_MM[-1]) -> int:
        """Advance in ``step_mm`` steps (the last one shorter) until the tip reaches the plan's target
        depth, or stops moving (bone); returns the number of steps. For scripted attempts: a
        trainee uses the buttons."""
        steps = 0
        while steps < 1000:
            remaining = self.remaining_to_target_mm()
            if remaining <= 1e-6:
                break
            before = float(self._require_needle("advance it").depth_mm)
            self.advance(min(float(step_mm), remaining))
            steps += 1
            if float(self.attempt.needle.depth_mm) <= before + 1e-9:
                break  # the tip rests on bone
        return steps

    # -- injectate --------------------------------------------------------------------------
    @property
    def injected_ml(self) -> float:
        return float(self.attempt.injectate.total_ml)

    def can_inject(self) -> bool:
        return self.attempt.needle is not None and self.injected_ml < self.plan_volume_ml - 1e-9 and self.result is None

    def inject(self, volume_ml: float = INJECT_STEP_ML) -> dict:
        """Inject ``volume_ml`` at the tip (capped at the plan's volume)."""
        self._require_needle("inject")
        volume = min(float(volume_ml), self.plan_volume_ml - self.injected_ml)
        if volume <= 1e-9:
            raise WidgetError(f"the plan's {self.plan_volume_ml:g} mL are injected")
        self.attempt.inject(volume)
        return self._after_action()

    # -- events, images ---------------------------------------------------------------------
    def _after_action(self) -> dict:
        for event in list(self.attempt.events)[len(self.messages):]:
            severity, text = EVENT_TEXT.get(event.type, ("warning", event.type.replace("_", " ")))
            where = f" ({event.structure.replace('_', ' ')})" if getattr(event, "structure", "") else ""
            self.messages.append({"type": event.type, "severity": severity, "text": text + where,
                                  "time_s": float(event.time_s)})
        return self.render()

    def render(self) -> dict:
        """B-mode at the current pose (with needle and injectate), MRI on the same pixels, 50/50 blend."""
        from workbench.widgets.fusion import blend

        start = time.perf_counter()
        bmode = np.asarray(self.imager.render(self._image_to_mri, self.attempt.needle, self.attempt.injectate), dtype=np.uint8)
        mri = fused = None
        if self._reslicer is not None:
            key = (self._image_to_mri.tobytes(), bmode.shape)
            if getattr(self, "_mri_key", None) != key:  # the MRI changes with the plane only
                self._mri_plane, self._mri_key = self._reslicer.on_plane(self._image_to_mri, *bmode.shape), key
            mri = self._mri_plane
            fused = blend(mri, bmode, FUSED_US_PERCENT)
        self.images = {"bmode": bmode, "mri": mri, "fused": fused}
        self.render_ms.append((time.perf_counter() - start) * 1000.0)
        return self.images

    def needle_pixels(self) -> dict | None:
        """Where the needle lies in the B-mode image: entry and tip as ``(col, row, out-of-plane mm)``.

        Returns
        -------
        dict or None
            ``{"entry_px": [c, r], "tip_px": [c, r], "entry_off_plane_mm", "tip_off_plane_mm"}``, MF
            pixels of the current image; None before insertion. For tests and the hidden hook.
        """
        needle = self.attempt.needle
        if needle is None:
            return None
        mri_to_image = np.linalg.inv(self._image_to_mri)
        out = {}
        normal = np.cross(self._image_to_mri[:3, 0], self._image_to_mri[:3, 1])
        normal = normal / np.linalg.norm(normal)
        for key, point in (("entry", needle.entry_mri), ("tip", needle.tip_mri)):
            pixel = mri_to_image @ np.append(np.asarray(point, dtype=float), 1.0)
            out[f"{key}_px"] = [round(float(pixel[0]), 2), round(float(pixel[1]), 2)]
            out[f"{key}_off_plane_mm"] = round(float((np.asarray(point) - self._image_to_mri[:3, 3]) @ normal), 3)
        return out

    def tip_visible(self) -> bool:
        """Whether the tip shows in the current image (the attempt's ``tip_visibility`` > 0.5)."""
        return bool(self.attempt.tip_visible())

    def status(self) -> dict:
        """What the trainee may know: inserted length, volume injected, events (no tip position)."""
        needle = self.attempt.needle
        return {
            "target": self.target_name,
            "inserted_mm": None if needle is None else round(float(needle.depth_mm), 1),
            "needle_length_mm": self.needle_length_mm,
            "plan_depth_mm": round(self.plan_depth_mm, 2),
            "injected_ml": round(self.injected_ml, 2),
            "plan_volume_ml": self.plan_volume_ml,
            "events": [m["type"] for m in self.messages],
            "finished": self.result is not None,
        }

    # -- finish -----------------------------------------------------------------------------
    def finish(self, save: bool = True) -> dict:
        """End the attempt; returns its metrics (and saves them with the recording when ``save``).

        Raises
        ------
        WidgetError
            The attempt is already finished.
        """
        if self.result is not None:
            raise WidgetError("this attempt is finished: start a new one")
        self.result = self.attempt.finish()
        self.metrics = _jsonable(dict(self.result.metrics))
        if save:
            self.saved_to = self.save()
        return self.metrics

    def save(self, root=None) -> Path:
        """Write the finished attempt into ``<case>/rehearsals/<attempt id>/`` (or under ``root``).

        The attempt is written into a hidden staging folder beside it and published with one
        ``rename``: a reader sees the whole attempt or nothing.

        Returns
        -------
        Path
            The attempt's folder (``metrics.json``, the recording).
        """
        import shutil

        if self.result is None:
            raise WidgetError("finish the attempt before saving it")
        root = Path(self.scene.case_dir) / REHEARSALS_DIR if root is None else Path(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        slug = "".join(c if c.isalnum() else "-" for c in self.target_name).strip("-")[:40] or "target"
        name = f"{stamp}-{slug}"
        final = root / name
        counter = 1
        while final.exists():
            counter += 1
            final = root / f"{name}-{counter}"
        staging = root / f".{final.name}.{os.getpid()}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            self.result.write(staging)  # metrics.json and the recording
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def score_rows(self) -> list[dict]:
        """The metrics as table rows ``{"metric", "value", "pass if", "pass"}`` (pass thresholds of
        :mod:`workbench.rehearsal.metrics` where it states them)."""
        if self.result is None:
            raise WidgetError("finish the attempt to see its metrics")
        thresholds = _pass_thresholds()
        rows = []
        for key, value in self.metrics.items():
            if key == "events":
                shown = ", ".join(f"{e['type']} ({e.get('structure', '')})".replace("_", " ") for e in value) or "none"
            else:
                shown = value
            row = {"metric": key.replace("_", " "), "value": shown, "pass if": "", "pass": ""}
            if key in thresholds:
                op, limit = thresholds[key]
                ok = _passes(value, op, limit)
                row["pass if"] = f"{op} {limit:g}" if isinstance(limit, (int, float)) else f"{op} {limit}"
                row["pass"] = "" if ok is None else ("yes" if ok else "NO")
            rows.append(row)
        return rows

    def teaching_score(self) -> dict | None:
        """The attempt scored as the teaching sessions score it (``workbench.teaching.score.score_rehearsal``:
        0-100 against expert records, passed or not, findings), for the library's task of the case
        (else the attempt's target); None where that scorer is not available."""
        if self.result is None:
            raise WidgetError("finish the attempt to score it")
        try:
            from workbench.teaching.score import score_rehearsal
        except ImportError:
            return None
        from workbench.teaching.library import library_case_for

        entry = library_case_for(self.scene.case_dir)
        task = entry.task if entry is not None else self.target_name
        scored = score_rehearsal(self.metrics, case_id=self.scene.case_id, task=task)
        return {"score": scored.score, "passed": scored.passed, "safety_status": scored.safety_status,
                "findings": list(scored.findings), "task": task}

    def submit(self, trainee: str, session: str | None = None, db=None) -> dict:
        """Store the finished attempt in the teaching results database as a ``rehearsal`` attempt
        of ``trainee`` (a pseudonym) and return what was stored.

        The attempt's saved ``metrics.json`` (saved now if :meth:`finish` did not) is scored and
        stored by :func:`workbench.teaching.submit.submit_rehearsal`, as ``workbench submit
        --attempt`` does: the task is the library's for the case.

        Parameters
        ----------
        trainee : str
            Pseudonymous trainee id (checked by the store: no names, no PHI).
        session : str, optional
            Teaching session id (default :func:`workbench.widgets.teacher.app_session`: the app's).
        db : str or Path, optional
            SQLite file or database URL (default :func:`workbench.widgets.teacher.app_results_db`:
            the app's, else ``results.sqlite`` beside the case's library).

        Returns
        -------
        dict
            ``attempt_id`` (int, the row's id), ``trainee``, ``session``, ``case_id``, ``task``,
            ``score`` (0-100), ``passed``, ``safety_status``, ``findings`` (list of str),
            ``metrics_path`` (Path of the submitted ``metrics.json``). Also kept as :attr:`submitted`.

        Raises
        ------
        WidgetError
            The attempt is not finished, or was submitted already (one row per attempt).
        workbench.teaching.TeachingError
            Not a pseudonym, no results database, the database cannot be reached.
        """
        from workbench.teaching.submit import submit_rehearsal
        from workbench.widgets.teacher import app_results_db, app_session

        if self.result is None:
            raise WidgetError("finish the attempt before submitting it", self.scene.case_dir)
        if self.submitted is not None:
            raise WidgetError(f"this attempt is submitted already (attempt {self.submitted['attempt_id']} of "
                              f"{self.submitted['trainee']}): start a new attempt", self.scene.case_dir)
        trainee = str(trainee).strip()
        session = app_session() if session is None else str(session).strip()
        db = app_results_db(self.scene.case_dir) if db is None else db
        if self.saved_to is None:
            self.saved_to = self.save()
        metrics_path = self.saved_to / "metrics.json"
        attempt_id, scored = submit_rehearsal(db, trainee, session, self.scene.case_dir, metrics_path)
        self.submitted = {"attempt_id": int(attempt_id), "trainee": trainee, "session": session,
                          "case_id": scored.case_id, "task": scored.task, "score": float(scored.score),
                          "passed": bool(scored.passed), "safety_status": scored.safety_status,
                          "findings": list(scored.findings), "metrics_path": metrics_path}
        return self.submitted

    def score(self) -> dict:
        """``{"passed": n, "checked": m, "pass": bool}`` over the metrics with a pass threshold."""
        rows = [r for r in self.score_rows() if r["pass"]]
        passed = sum(r["pass"] == "yes" for r in rows)
        return {"passed": passed, "checked": len(rows), "pass": bool(rows) and passed == len(rows)}


#: Pass thresholds the panel applies where :mod:`workbench.rehearsal.metrics` states none
#: (``PASS_THRESHOLDS`` there wins): metric -> (operator, limit). A rehearsal passes when the tip
#: ends within 5 mm of the target (inside the paravertebral space, whose injectate reaches the root),
#: no structure was punctured, the tip was visible for at least half of the advance (in-plane
#: technique) and the injectate went to the paravertebral space. Teaching aids, not validated cut-offs.
PASS_THRESHOLDS = {
    "tip_to_target_mm": ("<=", 5.0),
    "structure_punctures": ("==", 0),
    "tip_visible_fraction": (">=", 0.5),
    "injection_compartment": ("==", "paravertebral"),
}


def _pass_thresholds() -> dict[str, tuple[str, object]]:
    """Metric -> (operator, limit): :data:`PASS_THRESHOLDS` updated by ``workbench.rehearsal.metrics.PASS_THRESHOLDS``."""
    from workbench.rehearsal import metrics as metrics_module

    out = dict(PASS_THRESHOLDS)
    for key, spec in (getattr(metrics_module, "PASS_THRESHOLDS", None) or {}).items():
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            out[key] = (str(spec[0]), spec[1])
        elif isinstance(spec, (int, float)):
            out[key] = ("<=", float(spec))
    return out


def _passes(value, op: str, limit) -> bool | None:
    """Whether ``value op limit`` holds; None where the metric is undefined (no injection...)."""
    if value is None:
        return None
    if op == "==":
        return value == limit
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit}.get(op)


class RehearsalPanel:
    """The rehearsal's ipywidgets view over a :class:`RehearsalController`.

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-rehearsal``)
        Probe, needle and injection controls, the B-mode (``wb-rehearsal-bmode``), the MRI on the
        same plane (``wb-rehearsal-mri``), the fused view (``wb-rehearsal-fused``), the event list
        (``wb-rehearsal-events``), the metrics (``wb-rehearsal-metrics``) and the hidden JSON hook
        ``wb-rehearsal-state``; with ``submit``, the submit box ``wb-rehearsal-submit`` (trainee id
        ``wb-submit-trainee``, session, *Submit attempt*, the stored score ``wb-rehearsal-submit-result``).

    Parameters
    ----------
    controller : RehearsalController
    submit : bool
        Show the submit box (a teaching-library case: notebook 08 passes
        ``library_case_for(case) is not None``, as plan page 04 does).
    db : str or Path, optional
        Results database of the submit box (default: the app's, :meth:`RehearsalController.submit`).
    session : str, optional
        Preset teaching session id (editable; default the app's, :func:`workbench.widgets.teacher.app_session`).
    """

    def __init__(self, controller: RehearsalController, submit: bool = False, db=None, session: str | None = None):
        import ipywidgets as W

        from workbench.widgets._ui import full_label, json_hook

        self.controller = c = controller
        pose = c.pose
        slider = {"continuous_update": True, "style": {"description_width": "160px"}, "layout": W.Layout(width="440px")}
        self.along = W.FloatSlider(value=pose.centre_z_mm, min=pose.centre_z_mm - 80, max=pose.centre_z_mm + 80, step=1,
                                   description="along the back (mm)", **slider)
        self.across = W.FloatSlider(value=pose.centre_x_mm, min=pose.centre_x_mm - 80, max=pose.centre_x_mm + 80, step=1,
                                    description="across the back (mm)", **slider)
        self.rotation = W.FloatSlider(value=pose.rotation_deg, min=-180, max=180, step=1,
                                      description="rotation (deg)", **slider)
        self.tilt = W.FloatSlider(value=pose.tilt_deg, min=-40, max=40, step=1, description="tilt (deg)", **slider)
        self.snap_button = W.Button(description="Snap to the planned needle plane", icon="crosshairs")
        self.sweep_button = W.Button(description="Follow the sweep", icon="play")
        self.recorded_button = W.Button(description="Follow the recorded sweep", icon="film")
        entries = c.entry_choices()
        self.entry = W.Dropdown(options=list(entries), value="plan entry", description="entry",
                                style={"description_width": "60px"}, layout=W.Layout(width="360px"))
        self.insert_button = W.Button(description="Insert the needle", icon="syringe", button_style="primary")
        self.step_buttons = []
        for step in ADVANCE_STEPS_MM:
            self.step_buttons.append(W.Button(description=f"Advance {step:g} mm", icon="arrow-down"))
        for step in ADVANCE_STEPS_MM:
            self.step_buttons.append(W.Button(description=f"Withdraw {step:g} mm", icon="arrow-up"))
        self.angle = W.BoundedFloatText(value=5.0, min=-45.0, max=45.0, step=1.0, description="angle (deg)",
                                        style={"description_width": "80px"}, layout=W.Layout(width="170px"))
        self.redirect_in = W.Button(description="Redirect in plane", icon="undo")
        self.redirect_out = W.Button(description="Redirect out of plane", icon="undo")
        self.inject_button = W.Button(description=f"Inject {INJECT_STEP_ML:g} mL", icon="tint")
        self.finish_button = W.Button(description="Finish and score", icon="flag-checkered", button_style="success")
        self.target = W.Dropdown(options=c.target_names(c.scene), value=c.target_name, description="target",
                                 style={"description_width": "60px"}, layout=W.Layout(width="520px"))
        self.new_button = W.Button(description="New attempt", icon="refresh")
        full_label(self.new_button, self.snap_button, self.sweep_button, self.recorded_button, self.insert_button,
                   *self.step_buttons, self.redirect_in,
                   self.redirect_out, self.inject_button, self.finish_button)
        self.recorded_button.layout.align_self = "flex-start"  # its own row, at its label's width
        self.status = W.HTML()
        self.status.add_class("wb-rehearsal-status")
        self.events = W.HTML()
        self.events.add_class("wb-rehearsal-events")
        self.metrics = W.HTML()
        self.metrics.add_class("wb-rehearsal-metrics")
        self.hook = json_hook("wb-rehearsal-state")

        height, width = c.images["bmode"].shape
        scale = min(1.0, 380.0 / width, 420.0 / height)
        size = {"width": f"{int(round(width * scale))}px", "height": f"{int(round(height * scale))}px"}
        self.image_widgets = {}
        columns = []
        for key, title in (("bmode", "Simulated ultrasound (B-mode)"), ("mri", "MRI on the same plane"),
                           ("fused", f"Fused ({FUSED_US_PERCENT:.0f} % ultrasound)")):
            image = W.Image(format="png", layout=W.Layout(**size, min_width=size["width"], min_height=size["height"],
                                                         object_fit="contain"))
            image.add_class(f"wb-rehearsal-{key}")
            self.image_widgets[key] = image
            caption = W.HTML(f"<b>{html.escape(title)}</b>")
            columns.append(W.VBox([caption, image]))
        self.orientation = W.HTML()

        def step_action(button):
            word, value, _unit_ = button.description.split()
            return (lambda _b: self._act(c.advance, float(value))) if word == "Advance" else (
                lambda _b: self._act(c.withdraw, float(value)))

        for button in self.step_buttons:
            button.on_click(step_action(button))
        for widget in (self.along, self.across, self.rotation, self.tilt):
            widget.observe(self._on_slider, names="value")
        self.snap_button.on_click(lambda _b: self.snap())
        self.sweep_button.on_click(lambda _b: self.follow_sweep())
        self.recorded_button.on_click(lambda _b: self.follow_recorded_sweep())
        self.entry.observe(lambda _ch: self._on_entry(), names="value")
        self.insert_button.on_click(lambda _b: self._act(c.insert))
        self.redirect_in.on_click(lambda _b: self._act(c.redirect, float(self.angle.value), "in-plane"))
        self.redirect_out.on_click(lambda _b: self._act(c.redirect, float(self.angle.value), "out-of-plane"))
        self.inject_button.on_click(lambda _b: self._act(c.inject, INJECT_STEP_ML))
        self.finish_button.on_click(lambda _b: self.finish())
        self.new_button.on_click(lambda _b: self.new_attempt())
        self._syncing = False
        self.revision = 0
        self._sent: dict = {}
        self._scored_result = None  # the finished attempt whose scores self._scored holds
        self._scored: tuple[str, dict] = ("", {})

        probe_box = W.VBox([W.HTML("<b>Probe</b>"), self.along, self.across, self.rotation, self.tilt,
                            W.HBox([self.snap_button, self.sweep_button]), self.recorded_button])
        needle_box = W.VBox([W.HTML("<b>Needle</b>"), W.HBox([self.entry, self.insert_button]),
                             W.HBox(self.step_buttons[:len(ADVANCE_STEPS_MM)] + self.step_buttons[len(ADVANCE_STEPS_MM):]),
                             W.HBox([self.angle, self.redirect_in, self.redirect_out]),
                             W.HTML("<b>Injectate</b>"), W.HBox([self.inject_button, self.finish_button])])
        self.widget = W.VBox([
            W.HBox([self.target, self.new_button]),
            W.HBox([probe_box, needle_box], layout=W.Layout(flex_flow="row wrap", grid_gap="24px")),
            self.status,
            W.HBox(columns, layout=W.Layout(flex_flow="row wrap", grid_gap="8px")),
            self.orientation,
            self.events, self.metrics, self.hook,
        ])
        self.widget.add_class("wb-rehearsal")
        self.submit_box = None
        self.db = db
        if submit:
            self.submit_box = self._submit_box(session)
            self.widget.children = (*self.widget.children[:-1], self.submit_box, self.hook)
        self.refresh()

    def _submit_box(self, session: str | None):
        """The trainee's submit box (task, pseudonym, session, *Submit attempt*, result)."""
        import ipywidgets as W

        from workbench.teaching.library import library_case_for
        from workbench.widgets._ui import full_label
        from workbench.widgets.teacher import app_session

        entry = library_case_for(self.controller.scene.case_dir)
        task = ("" if entry is None else f"<b>Your task:</b> {html.escape(entry.task)} (difficulty "
                f"{entry.difficulty:.1f} of 5, {html.escape(entry.difficulty_label)}). ")
        self.submit_note = W.HTML(f"<b>Submit (teaching session)</b><br>{task}<small>After <i>Finish and score</i>, "
                                  "type your pseudonymous id and submit: the attempt is scored against expert "
                                  "records and stored for your teacher.</small>")
        self.trainee = W.Text(description="Trainee id", placeholder="pseudonym, e.g. t07")
        self.trainee.add_class("wb-submit-trainee")
        self.session = W.Text(description="Session", value=session if session is not None else app_session())
        self.submit_button = W.Button(description="Submit attempt", button_style="primary", icon="paper-plane")
        self.submit_button.add_class("wb-rehearsal-submit-button")
        full_label(self.submit_button)
        self.submit_result = W.HTML()
        self.submit_result.add_class("wb-rehearsal-submit-result")
        self.submit_button.on_click(lambda _b: self.submit())
        box = W.VBox([self.submit_note, W.HBox([self.trainee, self.session, self.submit_button]), self.submit_result])
        box.add_class("wb-rehearsal-submit")
        return box

    def submit(self) -> dict | None:
        """Submit the finished attempt under the typed pseudonym and session; show the stored score
        and findings. Returns :attr:`RehearsalController.submitted`, or None after an error (shown)."""
        if self.submit_box is None:
            raise WidgetError("this page has no submit box (not a teaching-library case)")
        from workbench.errors import WorkbenchError

        self.submit_button.disabled = True
        self.submit_result.value = "<i>Scoring your attempt against expert records…</i>"
        try:
            stored = self.controller.submit(self.trainee.value, self.session.value, db=self.db)
        except WorkbenchError as exc:
            self.refresh()
            problem = getattr(exc, "problem", None) or str(exc)
            self.submit_result.value = f"<span class='wb-submit-error' style='color:#b00'>{html.escape(problem)}</span>"
            return None
        self.refresh()
        return stored

    # -- actions ----------------------------------------------------------------------------
    def _act(self, action, *args) -> None:
        try:
            action(*args)
            self._error = ""
        except Exception as exc:  # noqa: BLE001 - shown to the user, the attempt goes on
            self._error = str(exc)
        self.refresh()

    def _on_slider(self, _change) -> None:
        if self._syncing:
            return
        self._act(self.controller.set_pose, None, centre_z_mm=float(self.along.value), centre_x_mm=float(self.across.value),
                  rotation_deg=float(self.rotation.value), tilt_deg=float(self.tilt.value))

    def _sync_sliders(self) -> None:
        pose = self.controller.pose
        self._syncing = True
        try:
            for widget, value in ((self.along, pose.centre_z_mm), (self.across, pose.centre_x_mm),
                                  (self.rotation, pose.rotation_deg), (self.tilt, pose.tilt_deg)):
                value = float(value)
                widget.min, widget.max = min(widget.min, value), max(widget.max, value)
                widget.value = value
        finally:
            self._syncing = False

    def snap(self) -> None:
        """Snap the probe to the planned needle plane (from the chosen entry)."""
        self._act(self.controller.snap)
        self._sync_sliders()

    def follow_sweep(self, count: int = 12) -> None:
        """Play a sweep head to foot over the current pose, frame by frame, then come back to it."""
        start = self.controller.pose
        for pose in [*self.controller.sweep_poses(count), start]:
            self._act(self.controller.set_pose, pose)
            self._sync_sliders()

    def follow_recorded_sweep(self, count: int = 24) -> None:
        """Play ``count`` frames of the case's recorded sweep (registered to the MRI), then come back to
        the slider's pose; says why not where the case has no sweep or registration."""
        try:
            planes = self.controller.recorded_sweep_planes(count=count)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self._error = str(exc)
            self.refresh()
            return
        for plane in planes:
            self._act(self.controller.set_plane, plane)
        self._act(self.controller.set_pose, self.controller.pose)

    def _on_entry(self) -> None:
        choices = self.controller.entry_choices()
        self.controller.choose_entry(choices[self.entry.value])

    def finish(self) -> None:
        """Finish the attempt: metrics, score, saved into the case."""
        self._act(self.controller.finish)

    def new_attempt(self) -> None:
        """Start over on the chosen target (the finished attempt stays saved)."""
        self._act(self.controller.new_attempt, self.target.value)
        self.entry.value = "plan entry"
        self._sync_sliders()

    # -- drawing ----------------------------------------------------------------------------
    def _score_view(self) -> tuple[str, dict]:
        """The finished attempt's verdict and metrics table (HTML) and the hook's ``metrics``,
        ``score`` and ``teaching_score``."""
        from workbench.widgets._ui import table_html

        c = self.controller
        score = c.score()
        teaching = c.teaching_score()
        verdict = (f"<b>{score['passed']} of {score['checked']} metrics within their pass threshold</b>"
                   if score["checked"] else "<b>Metrics</b>")
        if teaching is not None:
            colour = "#1a7f37" if teaching["passed"] else "#c00"
            findings = "".join(f"<li>{html.escape(f)}</li>" for f in teaching["findings"])
            verdict = (f"<b style='color:{colour}'>Score {teaching['score']:.0f} of 100: "
                       f"{'passed' if teaching['passed'] else 'not passed'}</b> <small>(against expert records, "
                       f"as a teaching session scores it)</small>" + (f"<ul>{findings}</ul>" if findings else "<br>")
                       + verdict)
        table = verdict + table_html(c.score_rows(), ["metric", "value", "pass if", "pass"])
        return table, {"metrics": c.metrics, "score": score, "teaching_score": teaching}

    def refresh(self) -> None:
        """Send the images, the status, the events and (when finished) the metrics to the browser."""
        c = self.controller
        for key, widget in self.image_widgets.items():
            image = c.images.get(key)
            if image is None:
                image = np.zeros((8, 8), np.uint8)
            if self._sent.get(key) is not image:  # the MRI plane is the same array until the probe moves
                widget.value = png_bytes(with_depth_marks(image, c.probe) if image.ndim >= 2 and image.shape[0] > 8 else image)
                self._sent[key] = image
        status = c.status()
        inserted = "not inserted" if status["inserted_mm"] is None else f"{status['inserted_mm']:.1f} mm inserted" + (
            f" of {status['needle_length_mm']:.0f} mm" if status["needle_length_mm"] else "")
        text = (f"Needle: {inserted} (plan: {status['plan_depth_mm']:.1f} mm to the target)"
                f" · injected {status['injected_ml']:g} of {status['plan_volume_ml']:g} mL"
                f" · probe rotation {c.pose.rotation_deg:.0f}°, tilt {c.pose.tilt_deg:.0f}°")
        error = getattr(self, "_error", "")
        if error:
            text += f"<br><span style='color:#c00'>{html.escape(error)}</span>"
        self.status.value = text
        self.orientation.value = ("<small>Skin at the top, depth downwards; the image's left and right as the probe "
                                  f"marker sets them; marks at the right edge every {DEPTH_MARK_MM:g} mm of depth "
                                  f"(long: {5 * DEPTH_MARK_MM:g} mm). The MRI is resliced through the same plane.</small>")
        colours = {"danger": "#c00", "warning": "#b35900"}
        items = "".join(f"<li style='color:{colours.get(m['severity'], '#333')}'><b>{html.escape(m['text'])}</b>"
                        f" <small>at {m['time_s']:.1f} s</small></li>" for m in reversed(c.messages))
        self.events.value = ("<b>Events</b>" + (f"<ul>{items}</ul>" if items else " <i>none yet</i>"))
        for button in self.step_buttons + [self.redirect_in, self.redirect_out]:
            button.disabled = c.needle is None or c.result is not None
        self.insert_button.disabled = c.result is not None
        self.inject_button.disabled = not c.can_inject()
        self.finish_button.disabled = c.result is not None
        self.revision += 1  # every refresh changes the hook, so a test can wait for the answer to its click
        state = {"revision": self.revision, "png_px": list(c.images["bmode"].shape[::-1]), "needle": c.needle_pixels(),
                 **status}
        if c.result is not None:
            if self._scored_result is not c.result:  # a finished attempt's scores never change: score it once,
                self._scored_result, self._scored = c.result, self._score_view()  # not on every slider event
            table, scores = self._scored
            saved = "" if c.saved_to is None else f"<br><small>Saved: {html.escape(c.saved_to.name)}</small>"
            self.metrics.value = table + saved
            state.update(scores)
        else:
            self.metrics.value = ""
        if self.submit_box is not None:
            stored = c.submitted
            self.submit_button.disabled = c.result is None or stored is not None
            if stored is not None:
                colour = "#1a7f37" if stored["passed"] else "#c00"
                findings = "".join(f"<li>{html.escape(f)}</li>" for f in stored["findings"])
                self.submit_result.value = (
                    f"<div class='wb-submit-score' data-attempt='{stored['attempt_id']}' data-score='{stored['score']:.2f}'>"
                    f"<b style='color:{colour}'>{html.escape(stored['trainee'])}: Score {stored['score']:.0f} / 100, "
                    f"{'passed' if stored['passed'] else 'not passed'}</b> <small>(stored as attempt "
                    f"{stored['attempt_id']} of session {html.escape(stored['session'])})</small>"
                    + (f"<ul>{findings}</ul>" if findings else "") + "</div>")
            elif c.result is None:
                self.submit_result.value = ""
            state["submitted"] = None if stored is None else {k: v for k, v in stored.items() if k != "metrics_path"}
        self.hook.value = json.dumps(state)
