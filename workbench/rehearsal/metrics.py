"""Scores of an attempt, as the needle-skill literature defines them (docs/rehearsal.md cites the sources).

The metrics are computed from the attempt's trace (:class:`Sample`, one per recorded step), so
a recording read back (:mod:`workbench.rehearsal.recording`) scores the same. Definitions
follow Perk Tutor's PerkEvaluator metrics (Ungi et al., IEEE TBME 59(12), 2012; the metric
scripts of github.com/PerkTutor/PythonMetrics):

- ``time_s``: elapsed time, first to last sample (Perk Tutor "Elapsed time").
- ``path_length_mm``: distance travelled by the tip while inside the body, i.e. between two
  samples that both have the tip below the skin (Perk Tutor "Needle path inside tissue").
- ``tissue_damage_mm2``: area swept by the inserted shaft (skin point to tip) between samples,
  two triangles per step as in Perk Tutor's ``TissueDamage.py`` ("Potential tissue damage").
- ``punctures``: number of times the needle enters the body (Perk Tutor "Tissue punctures");
  the structure punctures (dura, vessel, kidney) are ``structure_punctures`` and the events.
- ``redirections``: redirect actions that changed the direction by more than 1 deg.
- ``tip_to_plane_mm_*`` / ``needle_to_plane_angle_deg_*``: distance of the tip from the imaging
  plane and angle between the shaft and that plane, mean and max over the samples in which the
  needle moves (Perk Tutor "Average/Maximal distance from plane while moving the needle" and
  "... rotational error ...").
- ``tip_visible_fraction``: of the millimetres advanced, the fraction advanced with the tip
  visible in the image (``tip_visibility > 0.5``).
- ``tip_to_target_mm``: final tip to target.
- ``frechet_to_expert_mm``: discrete Frechet distance (Eiter & Mannila 1994) between the tip
  path (from the first skin entry, all inserted samples) and the expert path (entry to target),
  both resampled every ``FRECHET_STEP_MM``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FRECHET_STEP_MM", "METRIC_KEYS", "REDIRECTION_MIN_DEG", "Sample", "compute_metrics", "discrete_frechet_mm",
           "resample_path"]

#: Resampling step of the paths compared by the Frechet distance, mm.
FRECHET_STEP_MM = 0.5
#: A redirect changing the direction by less than this is not counted, deg.
REDIRECTION_MIN_DEG = 1.0
#: The keys of metrics.json (issue 18's first, then the others).
METRIC_KEYS = (
    "tip_to_target_mm", "events", "path_length_mm", "punctures", "redirections", "tip_visible_fraction",
    "frechet_to_expert_mm", "time_s", "tissue_damage_mm2", "structure_punctures", "tip_to_plane_mm_mean",
    "tip_to_plane_mm_max", "needle_to_plane_angle_deg_mean", "needle_to_plane_angle_deg_max", "injected_ml",
    "spread_segments", "injection_compartment",
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One recorded step of an attempt.

    Attributes
    ----------
    time_s : float
        Attempt time, s.
    action : str
        ``"start"``, ``"probe"``, ``"insert"``, ``"advance"``, ``"withdraw"``, ``"redirect"`` or ``"inject"``.
    amount : float
        mm for advance/withdraw (asked), mL for inject, 0 otherwise.
    entry_mri, direction_mri : (3,) float array or None
        Needle skin entry and unit direction (None before the first insertion), LPS mm.
    depth_mm : float
        Inserted length, mm.
    image_to_mri : (4, 4) float array or None
        ``ImageToMri`` of the imaging plane (None before the probe is placed).
    tip_visible : bool
        The tip was visible in the image at this sample.
    advanced_mm : float
        How far the tip actually moved forward in this step, mm.
    injected_ml : float
        Total injected so far, mL.
    """

    time_s: float
    action: str
    amount: float
    entry_mri: np.ndarray | None
    direction_mri: np.ndarray | None
    depth_mm: float
    image_to_mri: np.ndarray | None
    tip_visible: bool
    advanced_mm: float
    injected_ml: float

    @property
    def tip_mri(self) -> np.ndarray | None:
        """(3,) tip position, LPS mm (None before the first insertion)."""
        return None if self.entry_mri is None else self.entry_mri + self.depth_mm * self.direction_mri


def resample_path(points_mri: np.ndarray, step_mm: float = FRECHET_STEP_MM) -> np.ndarray:
    """(M, 3) points every ``step_mm`` of arc length along the polyline ``points_mri`` ((N, 3)), ends kept."""
    points_mri = np.asarray(points_mri, dtype=float).reshape(-1, 3)
    if len(points_mri) < 2:
        return points_mri.copy()
    segment = np.linalg.norm(np.diff(points_mri, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(segment)])
    if arc[-1] == 0:
        return points_mri[:1].copy()
    count = max(2, int(math.ceil(arc[-1] / step_mm)) + 1)
    where = np.linspace(0.0, arc[-1], count)
    return np.stack([np.interp(where, arc, points_mri[:, k]) for k in range(3)], axis=1)


def discrete_frechet_mm(path_a_mri: np.ndarray, path_b_mri: np.ndarray) -> float:
    """Discrete Frechet distance between two polylines ((N, 3) and (M, 3), mm), Eiter & Mannila's recurrence."""
    a = np.asarray(path_a_mri, dtype=float).reshape(-1, 3)
    b = np.asarray(path_b_mri, dtype=float).reshape(-1, 3)
    if not len(a) or not len(b):
        return float("nan")
    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    coupling = np.empty_like(distance)
    coupling[0] = np.maximum.accumulate(distance[0])
    for i in range(1, len(a)):
        row, previous = distance[i], coupling[i - 1]
        out = coupling[i]
        out[0] = max(previous[0], row[0])
        best_diagonal = np.minimum(previous[1:], previous[:-1])
        for j in range(1, len(b)):
            out[j] = max(row[j], min(best_diagonal[j - 1], out[j - 1]))
    return float(coupling[-1, -1])


def _triangle_area(a, b, c) -> float:
    return 0.5 * float(np.linalg.norm(np.cross(b - a, c - a)))


def _plane_measures(sample: Sample) -> tuple[float, float]:
    """(tip-to-plane distance mm, needle-to-plane angle deg) for a sample with a needle and a probe."""
    matrix = sample.image_to_mri
    normal = matrix[:3, 2] / np.linalg.norm(matrix[:3, 2])
    origin = matrix[:3, 3]
    distance_mm = abs(float((sample.tip_mri - origin) @ normal))
    angle_deg = math.degrees(math.asin(min(1.0, abs(float(sample.direction_mri @ normal)))))
    return distance_mm, angle_deg


def compute_metrics(samples: list[Sample], events: list, expert_entry_mri, target_mri, *, boluses=(),
                    spine_axis_mri=(0.0, 0.0, 1.0), segment_height_mm: float = 35.0) -> dict:
    """The metrics of an attempt (see the module docstring); keys :data:`METRIC_KEYS`.

    Parameters
    ----------
    samples : list of Sample
        The attempt's trace, in time order.
    events : list of workbench.rehearsal.events.Event
    expert_entry_mri, target_mri : (3,) float array
        The expert path, LPS mm.
    boluses : sequence of workbench.rehearsal.injectate.Bolus
    spine_axis_mri : (3,) float array
        Craniocaudal direction at the target (for the spread in segments).
    segment_height_mm : float
        The case's vertebral segment height, mm.

    Returns
    -------
    dict
        JSON-able: floats rounded to 1e-4, None where a metric is undefined (no probe, no
        needle, no injection).
    """
    from workbench.rehearsal.events import PUNCTURE_TYPES
    from workbench.rehearsal.injectate import spread_segments

    target_mri = np.asarray(target_mri, dtype=float)
    inserted = [s for s in samples if s.entry_mri is not None]
    path_mm = damage_mm2 = 0.0
    punctures = redirections = 0
    advanced_mm = visible_mm = 0.0
    plane_distances, plane_angles = [], []
    tip_path = []
    for previous, sample in zip(samples[:-1], samples[1:]):
        if sample.entry_mri is None:
            continue
        was_in = previous.entry_mri is not None and previous.depth_mm > 0
        is_in = sample.depth_mm > 0
        if is_in and not was_in:
            punctures += 1
        if is_in and previous.entry_mri is not None:
            tip0, tip1 = previous.tip_mri, sample.tip_mri
            path_mm += float(np.linalg.norm(tip1 - tip0))
            skin0, skin1 = previous.entry_mri, sample.entry_mri
            damage_mm2 += _triangle_area(tip0, tip1, skin1) + _triangle_area(skin1, skin0, tip0)
        if sample.action == "redirect" and previous.direction_mri is not None:
            cosine = float(np.clip(previous.direction_mri @ sample.direction_mri, -1.0, 1.0))
            if math.degrees(math.acos(cosine)) > REDIRECTION_MIN_DEG:
                redirections += 1
        if sample.action in ("advance", "withdraw", "redirect") and sample.image_to_mri is not None and is_in:
            distance_mm, angle_deg = _plane_measures(sample)
            plane_distances.append(distance_mm)
            plane_angles.append(angle_deg)
        if sample.advanced_mm > 0:
            advanced_mm += sample.advanced_mm
            visible_mm += sample.advanced_mm if sample.tip_visible else 0.0
    first_in = next((i for i, s in enumerate(inserted) if s.depth_mm > 0), None)
    if first_in is not None:
        tip_path = [inserted[max(first_in - 1, 0)].entry_mri] + [s.tip_mri for s in inserted[first_in:] if s.depth_mm > 0]
    last_tip = inserted[-1].tip_mri if inserted else None
    expert = resample_path(np.array([expert_entry_mri, target_mri], dtype=float))
    frechet = discrete_frechet_mm(resample_path(np.array(tip_path)), expert) if tip_path else None
    main = max(boluses, key=lambda b: b.volume_ml) if boluses else None

    def r(value):
        return None if value is None else round(float(value), 4)

    return {
        "tip_to_target_mm": r(None if last_tip is None else np.linalg.norm(last_tip - target_mri)),
        "events": [e.as_dict() for e in events],
        "path_length_mm": r(path_mm),
        "punctures": int(punctures),
        "redirections": int(redirections),
        "tip_visible_fraction": r(visible_mm / advanced_mm) if advanced_mm > 0 else None,
        "frechet_to_expert_mm": r(frechet),
        "time_s": r(samples[-1].time_s - samples[0].time_s) if samples else 0.0,
        "tissue_damage_mm2": r(damage_mm2),
        "structure_punctures": int(sum(e.type in PUNCTURE_TYPES for e in events)),
        "tip_to_plane_mm_mean": r(np.mean(plane_distances)) if plane_distances else None,
        "tip_to_plane_mm_max": r(np.max(plane_distances)) if plane_distances else None,
        "needle_to_plane_angle_deg_mean": r(np.mean(plane_angles)) if plane_angles else None,
        "needle_to_plane_angle_deg_max": r(np.max(plane_angles)) if plane_angles else None,
        "injected_ml": r(sum(b.volume_ml for b in boluses)),
        "spread_segments": r(spread_segments(main, spine_axis_mri, segment_height_mm)) if main is not None else None,
        "injection_compartment": None if main is None else main.compartment,
    }
