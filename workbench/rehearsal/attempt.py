"""One rehearsal attempt: probe, needle and injectate driven step by step, then scored.

:class:`Attempt` is what the notebook, the Voila page and ``workbench rehearse`` drive: place the
probe (:meth:`Attempt.set_probe`), insert the needle at a skin point, advance, withdraw,
redirect, inject, and :meth:`Attempt.finish` for the score (:mod:`workbench.rehearsal.metrics`)
and the replayable recording (:mod:`workbench.rehearsal.recording`). The tip moves through the
case's label map: bone stops it, and the structures it enters raise events
(:mod:`workbench.rehearsal.events`). Time is simulated from the actions unless a ``clock`` is
given (the interactive UI passes wall time). Frames: ``Mri`` (LPS mm), docs/frames.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from workbench.rehearsal.events import INJECTION_EVENTS, Event, EventDetector, compartment_at
from workbench.rehearsal.imaging import DEFAULT_ELEVATION_FWHM_MM, tip_visibility
from workbench.rehearsal.injectate import InjectateState, make_bolus
from workbench.rehearsal.metrics import Sample, compute_metrics
from workbench.rehearsal.needle import NeedleState, advance_tip, gauge_number, unit
from workbench.rehearsal.probe import REHEARSAL_PROBE, SkinSurface, image_to_mri, snap_to_needle_plane
from workbench.rehearsal.scene import RehearsalError, RehearsalScene

__all__ = [
    "ADVANCE_SPEED_MM_S",
    "DEFAULT_ELEVATION_FWHM_MM",
    "Attempt",
    "AttemptResult",
    "Event",
    "REDIRECT_DEPTH_MM",
    "RECORD_STEP_MM",
    "in_plane_image_to_mri",
    "scripted_attempt",
]

#: Needle speed of the simulated clock (a slow, imaged advance), mm/s.
ADVANCE_SPEED_MM_S = 2.0
#: Time a redirection takes on the simulated clock, s.
REDIRECT_TIME_S = 2.0
#: Injection rate of the simulated clock (with aspiration every mL), mL/s.
INJECT_RATE_ML_S = 0.2
#: Time of an insertion (skin puncture) on the simulated clock, s.
INSERT_TIME_S = 1.0
#: A long advance or withdrawal is recorded in steps of at most this, mm.
RECORD_STEP_MM = 1.0
#: A redirection first withdraws the tip to this depth (subcutaneous), mm, as clinicians do.
REDIRECT_DEPTH_MM = 10.0
#: Volume injected per step by :func:`scripted_attempt`, mL.
SCRIPT_INJECT_STEP_ML = 1.0


@dataclass
class AttemptResult:
    """What an attempt leaves: its metrics, events, trace and injectate.

    Attributes
    ----------
    metrics : dict
        metrics.json content (:data:`workbench.rehearsal.metrics.METRIC_KEYS`, plus ``case_id``,
        ``target``, ``expert_source``).
    events : list of Event
    samples : list of workbench.rehearsal.metrics.Sample
    injectate : InjectateState
    case_id, target_name : str
    needle_length_mm : float
    needle_gauge : int
    """

    metrics: dict
    events: list
    samples: list
    injectate: InjectateState
    case_id: str
    target_name: str
    needle_length_mm: float
    needle_gauge: int
    image_to_probe: np.ndarray | None = None
    files: dict = field(default_factory=dict)

    @property
    def recording(self):
        """The attempt as a PLUS-style tracking-only :class:`~workbench.io.sequence.TrackedSequence`."""
        from workbench.rehearsal.recording import to_sequence

        return to_sequence(self)

    def write(self, out_dir) -> dict:
        """Write ``metrics.json`` and ``recording.seq.mha`` into ``out_dir`` (created); returns their paths."""
        from workbench._atomic import atomic_write_text
        from workbench.io.sequence import write_sequence

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = out_dir / "metrics.json"
        atomic_write_text(metrics_path, json.dumps(self.metrics, indent=1) + "\n")
        recording_path = write_sequence(self.recording, out_dir / "recording.seq.mha")
        self.files = {"metrics": str(metrics_path), "recording": str(recording_path)}
        return dict(self.files)

    def log_row(self, case=None, *, group: str = "rehearsal", **values) -> dict:
        """A procedure-log row (:func:`workbench.outcomes.log.procedure_row`) for this attempt.

        ``operation_time_s`` is the attempt time, ``adverse_event`` 1 when a structure was
        punctured; ``values`` gives the log's other columns (its required covariates).
        """
        from workbench.outcomes.log import procedure_row

        from datetime import datetime, timezone

        if "procedure_id" not in values:  # microseconds: two attempts in one second get two ids
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S%f")
            values["procedure_id"] = f"{getattr(case, 'case_id', None) or self.case_id}-rehearsal-{stamp}"[-64:].lstrip("-_")
        values.setdefault("operation_time_s", max(1.0, float(self.metrics["time_s"])))
        values.setdefault("adverse_event", int(self.metrics["structure_punctures"] > 0))
        return procedure_row(None, case, group=group, **values)


def in_plane_image_to_mri(entry_mri, target_mri, probe) -> np.ndarray:
    """``ImageToMri`` ((4, 4)) of a plane containing the path entry -> target, transducer over its middle.

    A purely geometric placement (no skin; :func:`workbench.rehearsal.probe.snap_to_needle_plane`
    puts the probe on the skin): the image's depth axis points anterior (-y, LPS), the path lies
    in the plane, the transducer face centre is at the entry's depth, laterally over the middle
    of the path. For tests and scripted planes on toy maps.
    """
    entry_mri, target_mri = np.asarray(entry_mri, dtype=float), np.asarray(target_mri, dtype=float)
    direction = unit(target_mri - entry_mri)
    depth_axis = np.array([0.0, -1.0, 0.0])
    normal = np.cross(direction, depth_axis)
    normal = np.array([1.0, 0.0, 0.0]) if np.linalg.norm(normal) < 1e-6 else normal / np.linalg.norm(normal)
    lateral = np.cross(depth_axis, normal)
    middle = (entry_mri + target_mri) / 2.0
    centre = entry_mri + lateral * float((middle - entry_mri) @ lateral)
    transducer_to_mri = np.eye(4)
    transducer_to_mri[:3, 0], transducer_to_mri[:3, 1], transducer_to_mri[:3, 2] = lateral, depth_axis, normal
    transducer_to_mri[:3, 3] = centre
    return transducer_to_mri @ probe.image_to_transducer().matrix


class Attempt:
    """A needle attempt at one target of a scene.

    Parameters
    ----------
    scene : RehearsalScene
    target_name : str
        A target of the scene (or an unambiguous start of one, e.g. ``"L4 left"``).
    probe : workbench.phantom.ultrasound.ProbeModel, optional
        Default the C5-2-like curvilinear probe.
    clock : callable returning s, optional
        Wall clock (e.g. ``time.monotonic``); default simulated time from the actions.
    elevation_fwhm_mm : float
        Elevational beam width for tip visibility, mm.

    Raises
    ------
    RehearsalError
        Unknown target (names the case and its targets).
    """

    def __init__(self, scene: RehearsalScene, target_name: str, *, probe=None, clock: Callable[[], float] | None = None,
                 elevation_fwhm_mm: float = DEFAULT_ELEVATION_FWHM_MM):
        self.scene = scene
        self.target_name = scene.target(target_name)
        self.expert = scene.expert_paths[self.target_name]
        self.target_mri = scene.targets_mri[self.target_name]
        self.probe = probe or REHEARSAL_PROBE
        self.elevation_fwhm_mm = float(elevation_fwhm_mm)
        self._clock = clock
        self._start = clock() if clock is not None else 0.0
        self._time_s = 0.0
        self._detector = EventDetector(scene.label_map)
        self._needle: NeedleState | None = None
        self._image_to_mri: np.ndarray | None = None
        self._injectate = InjectateState()
        self._events: list[Event] = []
        self._samples: list[Sample] = []
        self._against_bone = False
        self._record("start", 0.0, 0.0)

    # -- state ---------------------------------------------------------------------------------
    @property
    def needle(self) -> NeedleState | None:
        """The needle now (None before :meth:`insert`)."""
        return self._needle

    @property
    def injectate(self) -> InjectateState:
        return self._injectate

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    @property
    def samples(self) -> list[Sample]:
        return list(self._samples)

    @property
    def image_to_mri(self) -> np.ndarray | None:
        """``ImageToMri`` of the current imaging plane ((4, 4)), None before :meth:`set_probe`."""
        return None if self._image_to_mri is None else self._image_to_mri.copy()

    @property
    def time_s(self) -> float:
        return self._time_s

    def tip_visible(self) -> bool:
        """Whether the tip shows in the current image (visibility > 0.5)."""
        if self._needle is None or self._image_to_mri is None:
            return False
        return float(tip_visibility(self._image_to_mri, self.probe, self._needle, self.elevation_fwhm_mm)) > 0.5

    # -- actions -------------------------------------------------------------------------------
    def set_probe(self, image_to_mri) -> None:
        """Image through the plane ``image_to_mri`` ((4, 4) ``ImageToMri``, MF pixels -> LPS mm); recorded."""
        matrix = np.asarray(image_to_mri, dtype=float)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise RehearsalError(f"image_to_mri must be a finite (4, 4) matrix, got shape {matrix.shape}")
        self._image_to_mri = matrix.copy()
        self._record("probe", 0.0, 0.0)

    def insert(self, entry_mri, direction_mri) -> NeedleState:
        """Put the needle tip on the skin at ``entry_mri`` pointing along ``direction_mri`` (hub to tip); recorded.

        A needle already inserted is pulled out first (a new skin puncture).
        """
        entry = np.asarray(entry_mri, dtype=float).reshape(3)
        try:
            direction = unit(direction_mri)
        except ValueError as exc:
            raise RehearsalError(str(exc)) from None
        if not np.all(np.isfinite(entry)):
            raise RehearsalError(f"needle entry must be 3 finite numbers (LPS mm), got {entry_mri!r}")
        spec = self.expert.needle
        self._needle = NeedleState.of_spec(spec, entry, direction)
        self._restart_at(entry)
        self._tick(INSERT_TIME_S)
        self._record("insert", 0.0, 0.0)
        return self._needle

    def advance(self, distance_mm: float) -> NeedleState:
        """Push the needle ``distance_mm`` forward (stops at bone and at the needle's length); recorded per mm."""
        needle = self._require_needle()
        remaining = float(distance_mm)
        if not (math.isfinite(remaining) and remaining >= 0):
            raise RehearsalError(f"advance by a finite distance >= 0 mm, got {distance_mm!r}")
        while remaining > 1e-12:
            step = min(RECORD_STEP_MM, remaining)
            remaining -= step
            if not self._advance_step(step):
                break
        return self._needle if self._needle is not None else needle

    def _advance_step(self, step_mm: float) -> bool:
        """One recorded step forward; False when the tip could not move (bone or full length)."""
        needle = self._needle
        move = advance_tip(needle, self.scene.label_map, step_mm)
        self._tick(step_mm / ADVANCE_SPEED_MM_S)
        points = needle.entry_mri + move.depths_mm[:, None] * needle.direction_mri
        self._events.extend(self._detector.tip_path(move.depths_mm, move.values, points, self._time_s, needle.depth_mm))
        advanced_mm = move.depth_mm - needle.depth_mm
        self._needle = needle.with_depth(move.depth_mm)
        if move.blocked_by_bone is not None:
            if not self._against_bone or advanced_mm > 0:
                self._events.append(self._detector.bone(move.blocked_by_bone, self._needle.tip_mri, self._time_s))
            self._against_bone = True
        elif advanced_mm > 0:
            self._against_bone = False
        self._record("advance", step_mm, advanced_mm)
        return move.blocked_by_bone is None and advanced_mm > 0

    def withdraw(self, distance_mm: float) -> NeedleState:
        """Pull the needle back ``distance_mm`` (not past the skin); recorded per mm. No events while withdrawing."""
        self._require_needle()
        remaining = float(distance_mm)
        if not (math.isfinite(remaining) and remaining >= 0):
            raise RehearsalError(f"withdraw by a finite distance >= 0 mm, got {distance_mm!r}")
        while remaining > 1e-12 and self._needle.depth_mm > 0:
            step = min(RECORD_STEP_MM, remaining)
            remaining -= step
            self._withdraw_step(step)
        return self._needle

    def _withdraw_step(self, step_mm: float) -> None:
        self._tick(step_mm / ADVANCE_SPEED_MM_S)
        self._needle = self._needle.with_depth(self._needle.depth_mm - step_mm)
        self._restart_at(self._needle.tip_mri)
        self._record("withdraw", step_mm, 0.0)

    def redirect(self, direction_mri) -> NeedleState:
        """Withdraw to :data:`REDIRECT_DEPTH_MM` (if deeper) and turn the needle to ``direction_mri`` about the skin entry."""
        self._require_needle()
        try:
            direction = unit(direction_mri)
        except ValueError as exc:
            raise RehearsalError(str(exc)) from None
        if self._needle.depth_mm > REDIRECT_DEPTH_MM:
            self.withdraw(self._needle.depth_mm - REDIRECT_DEPTH_MM)
        self._redirect_to(direction)
        return self._needle

    def _redirect_to(self, direction: np.ndarray) -> None:
        needle = self._needle
        self._needle = NeedleState(needle.entry_mri, direction, needle.depth_mm, needle.length_mm, needle.gauge)
        self._restart_at(self._needle.tip_mri)
        self._tick(REDIRECT_TIME_S)
        self._record("redirect", 0.0, 0.0)

    def inject(self, volume_ml: float) -> InjectateState:
        """Inject ``volume_ml`` at the tip: the pool of that compartment grows (or a new one starts); recorded.

        Injecting outside the paravertebral space raises an injection event (once per pool).
        """
        needle = self._require_needle()
        if not (math.isfinite(volume_ml) and volume_ml > 0):
            raise RehearsalError(f"inject a positive volume in mL, got {volume_ml!r}")
        if needle.depth_mm <= 0:
            raise RehearsalError("the needle tip is on the skin: advance it before injecting")
        tip = needle.tip_mri
        compartment, structure = compartment_at(self.scene.label_map, tip)
        boluses = list(self._injectate.boluses)
        last = boluses[-1] if boluses else None
        same = last is not None and last.compartment == compartment and np.allclose(last.centre_mri, tip, atol=1e-6)
        total_ml = (last.volume_ml if same else 0.0) + float(volume_ml)
        bolus = make_bolus(compartment, tip, total_ml, self.scene.spine_axis_mri(tip), self.scene.segment_height_mm)
        if same:
            boluses[-1] = bolus
        else:
            boluses.append(bolus)
        self._injectate = InjectateState(tuple(boluses))
        self._tick(float(volume_ml) / INJECT_RATE_ML_S)
        if not same and compartment in INJECTION_EVENTS:
            self._events.append(Event(INJECTION_EVENTS[compartment], structure, self._time_s, tip.copy()))
        self._record("inject", float(volume_ml), 0.0)
        return self._injectate

    def finish(self) -> AttemptResult:
        """Score the attempt (:func:`workbench.rehearsal.metrics.compute_metrics`)."""
        metrics = compute_metrics(
            self._samples, self._events, self.expert.entry_mri, self.target_mri, boluses=self._injectate.boluses,
            spine_axis_mri=self.scene.spine_axis_mri(self.target_mri), segment_height_mm=self.scene.segment_height_mm,
        )  # fmt: skip
        metrics.update(case_id=self.scene.case_id, target=self.target_name, expert_source=self.expert.source,
                       needle=self.expert.needle.label)
        spec = self.expert.needle  # the needle inserted is always this catalogue needle (:meth:`insert`)
        return AttemptResult(metrics, list(self._events), list(self._samples), self._injectate, self.scene.case_id,
                             self.target_name, float(spec.length_mm), gauge_number(spec.gauge),
                             self.probe.image_to_probe().matrix)

    # -- internals -----------------------------------------------------------------------------
    def _require_needle(self) -> NeedleState:
        if self._needle is None:
            raise RehearsalError("no needle yet: insert it at a skin entry first")
        return self._needle

    def _restart_at(self, tip_mri: np.ndarray) -> None:
        """The tip was placed (not pushed) at ``tip_mri`` (LPS mm): no event for the label there, no bone against it."""
        self._detector.reset(int(self.scene.label_map.values_at(tip_mri[None, :])[0]))
        self._against_bone = False

    def _tick(self, seconds: float) -> None:
        if self._clock is None:
            self._time_s += seconds
        else:
            self._time_s = float(self._clock() - self._start)

    def _record(self, action: str, amount: float, advanced_mm: float) -> None:
        if self._clock is not None:  # a wall clock: every step (probe moves too) carries its own time
            self._time_s = float(self._clock() - self._start)
        needle = self._needle
        self._samples.append(Sample(
            time_s=self._time_s,
            action=action,
            amount=float(amount),
            entry_mri=None if needle is None else needle.entry_mri.copy(),
            direction_mri=None if needle is None else needle.direction_mri.copy(),
            depth_mm=0.0 if needle is None else needle.depth_mm,
            image_to_mri=self.image_to_mri,
            tip_visible=self.tip_visible(),
            advanced_mm=float(advanced_mm),
            injected_ml=self._injectate.total_ml,
        ))  # fmt: skip


def _deviated(direction: np.ndarray, deviation_deg: float, medial_mri: np.ndarray, azimuth_deg: float) -> np.ndarray:
    """``direction`` turned by ``deviation_deg``; ``azimuth_deg`` says towards where: 0 medial, 90 caudal, -90 cranial.

    The turn is about the entry, towards ``cos(azimuth) * m + sin(azimuth) * c``, where ``m`` is
    ``medial_mri`` and ``c`` the caudal direction (-z, LPS), both made perpendicular to ``direction``.
    """
    if deviation_deg == 0:
        return direction
    medial = medial_mri - (medial_mri @ direction) * direction
    medial /= np.linalg.norm(medial)
    caudal = np.array([0.0, 0.0, -1.0])
    caudal = caudal - (caudal @ direction) * direction - (caudal @ medial) * medial
    caudal /= np.linalg.norm(caudal)
    towards = math.cos(math.radians(azimuth_deg)) * medial + math.sin(math.radians(azimuth_deg)) * caudal
    angle = math.radians(deviation_deg)
    turned = math.cos(angle) * direction + math.sin(angle) * towards
    return turned / np.linalg.norm(turned)


def scripted_attempt(scene: RehearsalScene, target_name: str, *, deviation_deg: float = 0.0,
                     entry_offset_mm: float = 0.0, deviation_azimuth_deg: float = 0.0, inject: bool = True,
                     probe=None) -> AttemptResult:
    """The needle follows the expert path of ``target_name``, optionally deviated; scored.

    The probe is placed on the skin in the plane of the expert path
    (:func:`workbench.rehearsal.probe.snap_to_needle_plane`); the needle is inserted at the expert
    entry moved ``entry_offset_mm`` towards the patient's left (+x, LPS), aimed at the target and
    turned ``deviation_deg`` about the craniocaudal axis (positive turns the shaft from a
    left-sided path towards the midline, i.e. towards the canal; the sign follows the target's
    side); it is advanced the expert depth (stopping at bone) and, with ``inject``, the plan's
    volume is injected in 1 mL steps.

    Parameters
    ----------
    scene : RehearsalScene
    target_name : str
    deviation_deg : float
        Angle between the scripted and the planned direction, deg.
    entry_offset_mm : float
        Shift of the skin entry along +x (patient left), mm.
    inject : bool
    probe : ProbeModel, optional
    """
    attempt = Attempt(scene, target_name, probe=probe)
    expert = attempt.expert
    attempt.set_probe(_planned_plane(scene, expert, attempt.probe))
    entry = expert.entry_mri + np.array([float(entry_offset_mm), 0.0, 0.0])
    direction = unit(expert.target_mri - entry)
    centres = list(scene.vertebra_centres_mri.values())
    midline_x_mm = float(np.mean([c[0] for c in centres])) if centres else 0.0
    medial = np.array([-1.0 if expert.target_mri[0] > midline_x_mm else 1.0, 0.0, 0.0])  # +x is the patient's left
    direction = _deviated(direction, float(deviation_deg), medial, float(deviation_azimuth_deg))
    attempt.insert(entry, direction)
    depth_mm = float((expert.target_mri - entry) @ direction) if deviation_deg == 0 else expert.depth_mm
    attempt.advance(depth_mm)
    if inject and attempt.needle.depth_mm > 0:
        remaining = float(expert.injectate_ml)
        while remaining > 1e-9:
            step = min(SCRIPT_INJECT_STEP_ML, remaining)
            attempt.inject(step)
            remaining -= step
    return attempt.finish()


def _planned_plane(scene: RehearsalScene, expert, probe) -> np.ndarray:
    """``ImageToMri`` of the probe on the skin snapped to the plane of the expert path (:mod:`workbench.rehearsal.probe`)."""
    skin = SkinSurface(scene.label_map)
    pose = snap_to_needle_plane(expert.entry_mri, expert.target_mri, probe, skin)
    return np.asarray(image_to_mri(pose, probe, skin), dtype=float)
