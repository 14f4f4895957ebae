"""Landmarks in ``Reference`` on a fresh case: picked on ultrasound frames or with a tracked stylus, and the live fit.

No registration is needed to place them: a point clicked on an ultrasound frame, in the frame's
own image (``Image`` frame, MF orientation, pixels; ``TrackedSequence.images_mf()``), goes to the
tracker's ``Reference`` frame through that frame's pose and the probe calibration,
``point_reference = ProbeToReference[n] @ ImageToProbe @ (x, y, 0, 1)``; a stylus tip goes there
through ``StylusToReference[n] @ StylusTipToStylus`` (pivot calibration) averaged over a still
segment of a tracking-only recording. Each point is stored in the case as a ``Landmark`` in frame
``Reference`` whose ``pair`` label is its name, so it pairs with the ``Mri`` landmark of the same
name (notebook 02). After each new pair the paired-point fit re-runs (:class:`LandmarkFitModel`:
FRE, leave-one-out, predicted TRE); below 3 pairs it says how many more are needed.

Models (no UI): :class:`UsFramePickModel`, :func:`stylus_landmark`, :class:`LandmarkFitModel`.
Controllers: :class:`UsLandmarkPicker` (the raw ultrasound frame in ipympl, a frame slider and a
name box; CSS class ``wb-us-landmarks``) and :class:`StylusLandmarkPanel` (``wb-stylus-landmarks``).
Frames and units: docs/frames.md.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path

import numpy as np

from workbench.frames import Transform
from workbench.widgets.session import CaseSession, WidgetError

__all__ = [
    "LandmarkFitModel",
    "StylusLandmarkPanel",
    "UsFramePickModel",
    "UsLandmarkPicker",
    "pair_guidance",
    "reference_landmark_name",
    "set_reference_landmark",
    "stylus_landmark",
    "stylus_tip_to_stylus",
]

#: How a ``Reference`` landmark's name says where it came from: ``"<pair> (US)"``, ``"<pair> (stylus)"``.
SOURCES = ("US", "stylus")


def reference_landmark_name(pair: str, source: str = "US") -> str:
    """Name of the ``Reference`` landmark of pair label ``pair`` picked by ``source`` (``"US"`` or ``"stylus"``)."""
    if source not in SOURCES:
        raise WidgetError(f"source must be one of {SOURCES}, got {source!r}")
    return f"{pair} ({source})"


def set_reference_landmark(case, pair: str, point_reference, source: str = "US"):
    """The case with a ``Reference`` landmark of pair label ``pair`` at ``point_reference``, replacing one.

    A pair has one ``Reference`` landmark: picking it again (on another frame, or with the stylus)
    replaces the earlier one. ``case`` itself is not changed.

    Parameters
    ----------
    case : workbench.case.Case
    pair : str
        Pair label shared with the ``Mri`` landmark of the same anatomical point (its name in notebook 02).
    point_reference : (3,) float array, mm, ``Reference`` frame
    source : {"US", "stylus"}
        Where the point came from; part of the landmark's name (:func:`reference_landmark_name`).

    Returns
    -------
    workbench.case.Case
    """
    from workbench.case.model import Landmark

    pair = str(pair).strip()
    if not pair:
        raise WidgetError("a landmark needs a name (the name of its MRI landmark)")
    point = np.asarray(point_reference, dtype=float).reshape(-1)
    if point.shape != (3,) or not np.isfinite(point).all():
        raise WidgetError(f"a Reference point is 3 finite numbers (mm), got {point_reference!r}")
    names = {reference_landmark_name(pair, s) for s in SOURCES}
    kept = [mark for mark in case.landmarks if not (mark.frame == "Reference" and (mark.pair == pair or mark.name in names))]
    landmark = Landmark(reference_landmark_name(pair, source), "Reference", tuple(float(v) for v in point), pair)
    return dataclasses.replace(case, landmarks=kept + [landmark])


def pair_guidance(pairs: int, waiting_mri=(), waiting_reference=()) -> str:
    """The one line shown while fewer than 3 landmark pairs exist: how many more, and who waits for a partner."""
    from workbench.registration.landmarks import MIN_PAIRS

    more = MIN_PAIRS - pairs
    line = (f"place {MIN_PAIRS} landmark pairs to register ({more} more: the same named point on the MRI, "
            f"notebook 02, and on the ultrasound or with the stylus)")
    waiting = [f"{name!r} has no ultrasound/stylus point" for name in waiting_mri]
    waiting += [f"{name!r} has no MRI landmark" for name in waiting_reference]
    if waiting:
        line += "; " + "; ".join(waiting[:4]) + ("; ..." if len(waiting) > 4 else "")
    return line


# -- ultrasound frames --------------------------------------------------------------------


class UsFramePickModel:
    """Pick ``Reference`` landmarks on the frames of a case's tracked sweeps (no registration needed).

    Parameters
    ----------
    session : CaseSession
    sweep : int
        Index of the sweep in the case.

    Attributes
    ----------
    missing : str or None
        Why nothing can be picked (the case has no sweep), else None.
    """

    def __init__(self, session: CaseSession, sweep: int = 0):
        self.session = session
        self.sweep_index = None
        self._images = None
        self.missing = None if session.case.sweeps else (
            "the case has no tracked ultrasound sweep: add one with `workbench new-case --sweep FILE --device-set XML` "
            "(or pick landmarks with a tracked stylus below)")
        if self.missing is None:
            self.select_sweep(sweep)

    @property
    def ready(self) -> bool:
        """True when points can be picked."""
        return self.missing is None

    @property
    def sweep_count(self) -> int:
        return len(self.session.case.sweeps)

    def select_sweep(self, sweep: int) -> None:
        """Work on sweep ``sweep`` of the case (its images, poses and calibration)."""
        from workbench.io.sequence import pose_series

        if not 0 <= int(sweep) < self.sweep_count:
            raise WidgetError(f"the case has {self.sweep_count} sweeps, no sweep {sweep}", self.session.folder)
        sequence = self.session.sweep(int(sweep))
        self.sweep_index = int(sweep)
        self.sequence = sequence
        self.image_to_probe: Transform = self.session.case.sweeps[self.sweep_index].image_to_probe
        self.probe_to_reference, pose_ok = pose_series(sequence, "ProbeToReference")
        self.valid = np.asarray(pose_ok, dtype=bool) & np.asarray(sequence.image_status, dtype=bool)
        self._images = None

    @property
    def images(self) -> np.ndarray:
        """(N, H, W) uint8 frames in MF orientation (the ``Image`` frame), loaded once per sweep."""
        if self._images is None:
            self._images = self.sequence.images_mf()
        return self._images

    @property
    def frame_count(self) -> int:
        return len(self.sequence)

    @property
    def image_shape_px(self) -> tuple[int, int]:
        """(height, width) of the frames, pixels."""
        return tuple(int(v) for v in self.images.shape[1:3])

    def frame_problem(self, frame: int) -> str | None:
        """Why frame ``frame`` cannot be picked on (outside the sweep, INVALID pose or image), else None."""
        frame = int(frame)
        if not 0 <= frame < self.frame_count:
            return f"frame {frame} is outside the sweep (0-{self.frame_count - 1})"
        if not self.valid[frame]:
            return f"frame {frame} has no valid pose (tracking INVALID): choose another frame"
        return None

    def point_reference(self, frame: int, pixel_xy) -> np.ndarray:
        """``Reference`` position (mm) of pixel ``(x, y)`` of frame ``frame``.

        Parameters
        ----------
        frame : int
        pixel_xy : (2,) float, pixel
            Column and row in the frame's own image (``Image`` frame, MF orientation).

        Returns
        -------
        (3,) float array, mm, ``Reference`` frame
            ``ProbeToReference[frame] @ ImageToProbe @ (x, y, 0, 1)``.

        Raises
        ------
        WidgetError
            The frame has an INVALID pose, or the pixel is outside the image.
        """
        from workbench.registration.landmarks import pixel_to_reference

        problem = self.frame_problem(frame)
        if problem:
            raise WidgetError(problem, self.session.folder / self.session.case.sweeps[self.sweep_index].path)
        pixel_px = np.asarray(pixel_xy, dtype=float).reshape(-1)
        height, width = self.image_shape_px
        if pixel_px.shape != (2,) or not np.isfinite(pixel_px).all():
            raise WidgetError(f"a pixel is (x, y), 2 finite numbers, got {pixel_xy!r}")
        if not (-0.5 <= pixel_px[0] <= width - 0.5 and -0.5 <= pixel_px[1] <= height - 0.5):
            raise WidgetError(f"pixel ({pixel_px[0]:.1f}, {pixel_px[1]:.1f}) is outside the {width} x {height} frame")
        probe_to_reference = Transform.from_name("ProbeToReference", self.probe_to_reference[int(frame)])
        return pixel_to_reference(pixel_px.reshape(1, 2), self.image_to_probe, probe_to_reference).reshape(3)

    def pick(self, frame: int, pixel_xy, name: str):
        """Store the ``Reference`` landmark ``name`` at pixel ``(x, y)`` of frame ``frame`` (atomic save).

        Returns
        -------
        workbench.case.Landmark
            Frame ``"Reference"``, pair label ``name``, name ``"<name> (US)"``.
        """
        if self.missing:
            raise WidgetError(self.missing, self.session.folder)
        point_reference = self.point_reference(frame, pixel_xy)
        self.session.save(set_reference_landmark(self.session.case, name, point_reference, "US"))
        return next(m for m in self.session.case.landmarks if m.frame == "Reference" and m.pair == str(name).strip())


# -- stylus -------------------------------------------------------------------------------


def stylus_tip_to_stylus(device_set) -> Transform:
    """The pivot calibration ``StylusTipToStylus`` of a PLUS device set (a path or a read DeviceSet).

    Raises
    ------
    WidgetError
        The device set has no ``StylusTipToStylus`` (the message names the file).
    """
    from workbench.errors import FrameError
    from workbench.io.plus_config import read_device_set

    if isinstance(device_set, (str, os.PathLike)):
        device_set = read_device_set(device_set)
    try:
        return device_set.transform_repository().get("StylusTipToStylus")
    except FrameError:
        raise WidgetError("device set has no StylusTipToStylus (pivot calibration) in CoordinateDefinitions",
                          device_set.source_path) from None


def stylus_landmark(session: CaseSession, recording, name: str, device_set=None, stylus_tip_to_stylus_transform=None,
                    frames=None, tolerance_mm: float | None = None):
    """Store the ``Reference`` landmark ``name`` at the stylus tip of a tracked stylus recording (atomic save).

    The recording is a PLUS sequence file with ``StylusToTracker`` and ``ReferenceToTracker`` (or
    ``StylusToReference``), with or without images; the tip (``StylusTipToStylus``, from the
    device set's pivot calibration) is averaged over the valid frames of a still segment
    (:func:`workbench.registration.landmarks.still_stylus_tip`).

    Parameters
    ----------
    session : CaseSession
    recording : path
        The stylus sequence file.
    name : str
        Pair label: the name of the ``Mri`` landmark it pairs with.
    device_set : path, optional
        PLUS device set holding ``StylusTipToStylus``; default the device set of the case's first sweep.
    stylus_tip_to_stylus_transform : Transform, optional
        The pivot calibration itself (instead of a device set).
    frames : (start, stop) pair of int, optional
        The still segment; default the longest one found.
    tolerance_mm : float, optional
        Still means within this distance (default
        :data:`workbench.registration.landmarks.STILL_TOLERANCE_MM`).

    Returns
    -------
    landmark : workbench.case.Landmark
        Frame ``"Reference"``, name ``"<name> (stylus)"``.
    still : workbench.registration.landmarks.StillTip
        The mean tip (mm), its spread (mm) and the frames used.

    Raises
    ------
    WidgetError
        No pivot calibration, no stylus pose in the file, or no still segment (the message names the file).
    """
    from workbench.errors import FrameError, RegistrationError
    from workbench.io.sequence import pose_series, read_sequence
    from workbench.registration.landmarks import STILL_TOLERANCE_MM, still_stylus_tip, stylus_tip_points_reference

    recording = Path(recording).expanduser()
    tip_to_stylus = stylus_tip_to_stylus_transform
    if tip_to_stylus is None:
        if device_set is None:
            sweep = next((s for s in session.case.sweeps if s.device_set is not None), None)
            if sweep is None:
                raise WidgetError("the stylus tip needs the pivot calibration: give the device set holding StylusTipToStylus",
                                  recording)
            device_set = session.folder / sweep.device_set.path
        tip_to_stylus = stylus_tip_to_stylus(device_set)
    sequence = read_sequence(recording)
    try:
        poses, valid = pose_series(sequence, "StylusToReference")
    except FrameError as exc:
        raise WidgetError(f"no stylus pose in the recording: {exc}", recording) from None
    tips_reference = stylus_tip_points_reference(poses, tip_to_stylus)
    try:
        still = still_stylus_tip(tips_reference, valid, frames,
                                 STILL_TOLERANCE_MM if tolerance_mm is None else tolerance_mm)
    except RegistrationError as exc:
        raise WidgetError(str(exc), recording) from None
    session.save(set_reference_landmark(session.case, name, still.point_reference, "stylus"))
    landmark = next(m for m in session.case.landmarks if m.frame == "Reference" and m.pair == str(name).strip())
    return landmark, still


# -- the live fit -------------------------------------------------------------------------


class LandmarkFitModel:
    """The paired-point fit of the case's landmarks, re-run on :meth:`update` (after each new pair).

    With 3 or more pairs it holds the fit (:attr:`result`: FRE, residuals, leave-one-out errors,
    predicted TRE at the case's targets; the same call as the registration panel,
    :func:`workbench.widgets.session.landmark_registration`); below that, :attr:`missing` says how
    many more pairs are needed.

    Attributes
    ----------
    result : RegistrationResult or None
    missing : str or None
        One line of guidance when there is no fit.
    pair_names : list of str
    """

    def __init__(self, session: CaseSession):
        self.session = session
        self.result = None
        self.missing = None
        self.pair_names: list[str] = []
        self.update()

    @property
    def ready(self) -> bool:
        return self.result is not None

    def update(self):
        """Re-read the case's landmarks and re-fit; returns the result or None (see :attr:`missing`)."""
        from workbench.errors import RegistrationError
        from workbench.registration.landmarks import MIN_PAIRS, pair_landmarks
        from workbench.widgets.session import landmark_registration

        self.result = None
        try:
            pairs = pair_landmarks(self.session.case.landmarks)
        except RegistrationError as exc:
            self.pair_names, self.missing = [], str(exc)
            return None
        self.pair_names = list(pairs.names)
        if len(pairs.names) < MIN_PAIRS:
            waiting_mri = [m.pair for m in pairs.unpaired if m.frame == "Mri" and m.pair]
            waiting_reference = [m.pair for m in pairs.unpaired if m.frame == "Reference" and m.pair]
            self.missing = pair_guidance(len(pairs.names), waiting_mri, waiting_reference)
            return None
        try:
            self.result = landmark_registration(self.session)
        except RegistrationError as exc:
            self.missing = f"cannot fit the {len(pairs.names)} landmark pairs: {exc}"
            return None
        self.missing = None
        return self.result

    def summary(self) -> str:
        """One line: the fit's FRE, worst leave-one-out and predicted TRE, or the guidance."""
        if self.result is None:
            return self.missing or ""
        return self.result.message

    def rows(self) -> list[dict]:
        """Per landmark pair: ``landmark``, ``residual_mm``, ``leave_one_out_mm`` (None with 3 pairs), ``outlier``."""
        if self.result is None:
            return []
        loo = self.result.provenance.get("leave_one_out_mm", {})
        outliers = set(self.result.provenance.get("outliers", []))
        return [{"landmark": name, "residual_mm": residual, "leave_one_out_mm": loo.get(name), "outlier": name in outliers}
                for name, residual in self.result.residuals_mm.items()]

    def target_rows(self) -> list[dict]:
        """Per target: ``target``, ``predicted_TRE_mm``."""
        if self.result is None:
            return []
        return [{"target": name, "predicted_TRE_mm": tre} for name, tre in self.result.predicted_tre_mm.items()]

    def html(self) -> str:
        """The fit (summary line and tables) or the guidance line, as HTML."""
        from workbench.widgets._ui import table_html

        if self.result is None:
            return f"<span class='wb-guidance' style='color:#b58900'>{html.escape(self.missing or '')}</span>"
        return (f"<p>{html.escape(self.summary())}</p><div style='display:flex;gap:16px'>"
                f"<div style='max-height:220px;overflow:auto'>{table_html(self.rows())}</div>"
                f"<div>{table_html(self.target_rows())}</div></div>")


# -- controllers --------------------------------------------------------------------------


def _mri_names(session: CaseSession) -> list[str]:
    """Pair labels of the case's ``Mri`` landmarks: those without a ``Reference`` partner first."""
    mri = [m.pair or m.name for m in session.case.landmarks if m.frame == "Mri"]
    paired = {m.pair for m in session.case.landmarks if m.frame == "Reference"}
    return [n for n in mri if n not in paired] + [n for n in mri if n in paired]


class UsLandmarkPicker:
    """The raw ultrasound frame (ipympl), a frame slider and a name box: a click stores a ``Reference`` landmark.

    Parameters
    ----------
    session : CaseSession
    sweep : int
    fit : LandmarkFitModel, optional
        The live fit shown below the frame (default: a new one on ``session``).

    Attributes
    ----------
    model : UsFramePickModel
    fit : LandmarkFitModel
    widget : ipywidgets.VBox
        Root, CSS class ``wb-us-landmarks``; its status line has class ``wb-us-pick-status``, the
        fit ``wb-landmark-fit``, the JSON hook of the last pick ``wb-last-us-landmark``.
    """

    def __init__(self, session: CaseSession, sweep: int = 0, fit: LandmarkFitModel | None = None):
        import ipywidgets as W

        from workbench.widgets._ui import json_hook

        self.session = session
        self.model = UsFramePickModel(session, sweep)
        self.fit = fit or LandmarkFitModel(session)
        self.status = W.HTML()
        self.status.add_class("wb-us-pick-status")
        self.fit_view = W.HTML(self.fit.html())
        self.fit_view.add_class("wb-landmark-fit")
        self.last_pick = json_hook("wb-last-us-landmark")
        self._picks: list[tuple[int, int, float, float, str]] = []
        if not self.model.ready:
            self.status.value = f"<span class='wb-guidance' style='color:#b58900'>{html.escape(self.model.missing)}</span>"
            self.widget = W.VBox([self.status, self.fit_view])
            self.widget.add_class("wb-us-landmarks")
            return
        from workbench.widgets._ui import new_canvas

        valid = np.flatnonzero(self.model.valid)
        start = int(valid[len(valid) // 2]) if len(valid) else 0
        self.sweep = W.Dropdown(options=[(f"sweep {i}: {s.path}", i) for i, s in enumerate(session.case.sweeps)],
                                value=self.model.sweep_index, description="sweep")
        self.frame = W.IntSlider(value=start, min=0, max=self.model.frame_count - 1, description="frame",
                                 continuous_update=False)
        self.name = W.Combobox(value=(_mri_names(session) or ["landmark 1"])[0], options=_mri_names(session),
                               description="name", ensure_option=False, layout=W.Layout(width="320px"),
                               tooltip="the name of the MRI landmark this point pairs with")
        height, width = self.model.image_shape_px
        self.figure, self.canvas = new_canvas(7.0, 7.0 * height / width + 0.3)
        self.axes = self.figure.add_axes([0.01, 0.01, 0.98, 0.94])
        self.sweep.observe(lambda c: self._on_sweep(c["new"]), names="value")
        self.frame.observe(lambda c: self.show(c["new"]), names="value")
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.widget = W.VBox([W.HBox([self.sweep, self.frame, self.name]), self.canvas, self.status, self.fit_view,
                              self.last_pick])
        self.widget.add_class("wb-us-landmarks")
        self.show(start)
        self.status.value = html.escape(
            "click on a structure you also marked on the MRI (same name): it is stored in Reference through the "
            "frame's tracked pose and the probe calibration")

    def _on_sweep(self, sweep: int) -> None:
        self.model.select_sweep(sweep)
        self.frame.max = self.model.frame_count - 1
        self.show(self.frame.value)

    def show(self, frame: int) -> None:
        """Draw frame ``frame`` (its own image, MF orientation) with the points picked on it."""
        frame = int(frame)
        self.axes.clear()
        self.axes.set_axis_off()
        self.axes.imshow(self.model.images[frame], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        problem = self.model.frame_problem(frame)
        title = f"sweep {self.model.sweep_index} frame {frame}" + (" - INVALID pose: cannot pick" if problem else "")
        self.axes.set_title(title, fontsize=9, color="#c00" if problem else "black")
        for sweep, picked_frame, x, y, name in self._picks:
            if sweep == self.model.sweep_index and picked_frame == frame:
                self.axes.plot([x], [y], marker="+", color="#ffd21f", markersize=14, markeredgewidth=2)
                self.axes.annotate(name, (x, y), xytext=(6, 6), textcoords="offset points", color="#ffd21f", fontsize=8)
        self.canvas.draw_idle()

    def click_pixel(self, x: float, y: float, name: str | None = None):
        """Pick pixel ``(x, y)`` of the current frame as ``name`` (default the name box), as a click does."""
        from workbench.widgets._ui import set_json
        from workbench.widgets.editor import next_name

        name = (name or self.name.value).strip()
        frame = int(self.frame.value)
        landmark = self.model.pick(frame, (x, y), name)
        self._picks.append((self.model.sweep_index, frame, float(x), float(y), name))
        self.fit.update()
        self.fit_view.value = self.fit.html()
        point = landmark.point_mm
        self.status.value = html.escape(
            f"{name}: Reference ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm from frame {frame} pixel "
            f"({x:.1f}, {y:.1f}), saved. {self.fit.summary()}")
        set_json(self.last_pick, {"name": name, "frame": frame, "pixel_xy": [float(x), float(y)],
                                  "point_reference": [float(v) for v in point], "pairs": len(self.fit.pair_names)})
        options = _mri_names(self.session)
        self.name.options = options
        waiting = [n for n in options if n not in self.fit.pair_names]
        self.name.value = waiting[0] if waiting else next_name(name)
        self.show(frame)
        return landmark

    def _on_click(self, event) -> None:
        if event.inaxes is not self.axes or event.xdata is None or getattr(event.button, "value", event.button) != 1:
            return
        try:
            self.click_pixel(event.xdata, event.ydata)
        except WidgetError as exc:
            self.status.value = f"<span style='color:#c00'>{html.escape(exc.problem)}</span>"


class StylusLandmarkPanel:
    """Add a ``Reference`` landmark from a tracked stylus recording (tracking-only PLUS file).

    Parameters
    ----------
    session : CaseSession
    fit : LandmarkFitModel, optional
        Shared with a :class:`UsLandmarkPicker` so both update the same fit.

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-stylus-landmarks``)
    """

    def __init__(self, session: CaseSession, fit: LandmarkFitModel | None = None):
        import ipywidgets as W

        self.session = session
        self.fit = fit or LandmarkFitModel(session)
        wide = W.Layout(width="640px")
        default_set = next((s.device_set.path for s in session.case.sweeps if s.device_set is not None), "")
        self.recording = W.Text(value="", placeholder="stylus recording (.igs.mha, tracking only)",
                                description="recording", layout=wide)
        self.device_set = W.Text(value=str(session.folder / default_set) if default_set else "",
                                 placeholder="device set with StylusTipToStylus", description="device set", layout=wide)
        self.name = W.Combobox(value=(_mri_names(session) or [""])[0], options=_mri_names(session), description="name",
                               ensure_option=False, layout=W.Layout(width="320px"))
        self.add_button = W.Button(description="Add stylus point", icon="map-pin")
        self.status = W.HTML()
        self.status.add_class("wb-stylus-status")
        self.add_button.on_click(lambda _b: self.add())
        self.widget = W.VBox([self.recording, self.device_set, W.HBox([self.name, self.add_button]), self.status])
        self.widget.add_class("wb-stylus-landmarks")
        self.status.value = html.escape("give a stylus recording (tip held still on the landmark) and its name")

    def add(self):
        """Add the point from the boxes; returns ``(landmark, still)`` or None (the status line says why)."""
        from workbench.errors import WorkbenchError

        if not self.recording.value.strip():
            self.status.value = "<span class='wb-guidance' style='color:#b58900'>give the stylus recording first</span>"
            return None
        try:
            landmark, still = stylus_landmark(self.session, self.recording.value.strip(), self.name.value,
                                              device_set=self.device_set.value.strip() or None)
        except WorkbenchError as exc:
            self.status.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"
            return None
        self.fit.update()
        point = landmark.point_mm
        self.status.value = html.escape(
            f"{landmark.pair}: Reference ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm, mean of frames "
            f"{int(still.frames[0])}-{int(still.frames[-1])} (spread {still.spread_mm:.2f} mm), saved. {self.fit.summary()}")
        return landmark, still
