"""The replayable recording of an attempt: a PLUS-style tracking-only sequence of probe and needle poses.

One frame per recorded step (:class:`workbench.rehearsal.metrics.Sample`), written with the
project's sequence writer (:func:`workbench.io.sequence.write_sequence`, ``.seq.mha``):

- ``Timestamp``: attempt time, s;
- ``ImageToMriTransform``: the imaging plane (MF pixels -> LPS mm), INVALID before the probe is placed;
- ``ProbeToMriTransform``: the probe's tracking sensor (``ImageToMri`` times the inverse of the
  probe's calibration ``ImageToProbe``), INVALID likewise;
- ``NeedleTipToMriTransform``: the needle tip (origin) with its z axis along the shaft (hub to
  tip), INVALID before the needle is inserted;
- per-frame fields ``Action`` (start, probe, insert, advance, withdraw, redirect, inject),
  ``ActionAmount`` (mm or mL), ``NeedleEntryMri``, ``NeedleDirectionMri`` (3 numbers each),
  ``NeedleDepthMm``, written with ``repr`` so they read back to the same floats.

:func:`replay` re-runs the actions of a recording against the scene, which gives the same
events and metrics (numbers read back exactly). The header names the case, target and needle;
no patient data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from workbench.io.sequence import TrackedSequence, read_sequence
from workbench.rehearsal.scene import RehearsalError

__all__ = ["needle_tip_to_mri", "read_recording", "replay", "to_sequence"]


def needle_tip_to_mri(tip_mri, direction_mri) -> np.ndarray:
    """(4, 4) ``NeedleTipToMri``: origin at the tip, z along the shaft (hub to tip), rigid."""
    z = np.asarray(direction_mri, dtype=float)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = x, np.cross(z, x), z, tip_mri
    return matrix


def _vector_text(vector) -> str | None:
    return None if vector is None else " ".join(repr(float(v)) for v in vector)


def to_sequence(result) -> TrackedSequence:
    """The :class:`~workbench.rehearsal.attempt.AttemptResult` as a tracking-only :class:`TrackedSequence`."""
    from workbench.phantom.ultrasound import CURVILINEAR_C5_2

    samples = result.samples
    count = len(samples)
    image_to_probe = result.image_to_probe if result.image_to_probe is not None else CURVILINEAR_C5_2.image_to_probe().matrix
    probe_to_image = np.linalg.inv(image_to_probe)
    image = np.tile(np.eye(4), (count, 1, 1))
    probe = np.tile(np.eye(4), (count, 1, 1))
    tip = np.tile(np.eye(4), (count, 1, 1))
    image_ok = np.zeros(count, dtype=bool)
    tip_ok = np.zeros(count, dtype=bool)
    for i, s in enumerate(samples):
        if s.image_to_mri is not None:
            image[i], image_ok[i] = s.image_to_mri, True
            probe[i] = _orthonormalised(s.image_to_mri @ probe_to_image)
        if s.entry_mri is not None:
            tip[i], tip_ok[i] = needle_tip_to_mri(s.tip_mri, s.direction_mri), True
    fields = {
        "Action": [s.action for s in samples],
        "ActionAmount": [repr(float(s.amount)) for s in samples],
        "NeedleEntryMri": [_vector_text(s.entry_mri) for s in samples],
        "NeedleDirectionMri": [_vector_text(s.direction_mri) for s in samples],
        "NeedleDepthMm": [repr(float(s.depth_mm)) for s in samples],
    }
    header = {
        "RehearsalCaseId": result.case_id,
        "RehearsalTarget": result.target_name,
        "RehearsalNeedle": f"{result.needle_length_mm:g} mm {result.needle_gauge}G",
    }
    return TrackedSequence(
        images=None,
        timestamps_s=np.array([s.time_s for s in samples], dtype=float),
        transforms={"ImageToMri": image, "ProbeToMri": probe, "NeedleTipToMri": tip},
        transform_status={"ImageToMri": image_ok, "ProbeToMri": image_ok.copy(), "NeedleTipToMri": tip_ok},
        frame_fields=fields,
        header=header,
    )


def _orthonormalised(matrix: np.ndarray) -> np.ndarray:
    """The nearest rigid transform (SVD of the rotation part): ``ProbeToMri`` is rigid up to rounding."""
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    out = matrix.copy()
    out[:3, :3] = u @ vt
    return out


def read_recording(path) -> TrackedSequence:
    """Read a recording written by :meth:`~workbench.rehearsal.attempt.AttemptResult.write`.

    Raises
    ------
    RehearsalError
        The sequence lacks the rehearsal fields (names the file).
    """
    sequence = read_sequence(path)
    missing = [f for f in ("Action", "ActionAmount", "NeedleEntryMri", "NeedleDirectionMri") if f not in sequence.frame_fields]
    if missing or "ImageToMri" not in sequence.transforms:
        raise RehearsalError(f"not a rehearsal recording: no {', '.join(missing or ['ImageToMriTransform'])}", path)
    return sequence


def replay(scene, recording, *, target_name: str | None = None):
    """Re-run a recording's actions on ``scene``; returns the :class:`~workbench.rehearsal.attempt.AttemptResult`.

    Parameters
    ----------
    scene : RehearsalScene
    recording : TrackedSequence or path
        As written by :meth:`AttemptResult.write` (``recording.seq.mha``).
    target_name : str, optional
        Default the target named in the recording's header.
    """
    from workbench.rehearsal.attempt import Attempt

    if not isinstance(recording, TrackedSequence):
        recording = read_recording(Path(recording))
    name = target_name or recording.header.get("RehearsalTarget")
    if not name:
        raise RehearsalError("the recording names no target: give target_name", recording.source_path)
    clock_now = [float(recording.timestamps_s[0]) if len(recording) else 0.0]
    attempt = Attempt(scene, name, clock=lambda: clock_now[0])
    attempt._start = 0.0
    fields = recording.frame_fields
    for i in range(1, len(recording)):
        clock_now[0] = float(recording.timestamps_s[i])
        action = fields["Action"][i]
        amount = float(fields["ActionAmount"][i])
        if action == "probe":
            attempt.set_probe(recording.transforms["ImageToMri"][i])
            continue
        if action == "insert":
            attempt.insert(_vector(fields["NeedleEntryMri"][i]), _vector(fields["NeedleDirectionMri"][i]))
        elif action == "advance":
            attempt._advance_step(amount)
        elif action == "withdraw":
            attempt._withdraw_step(amount)
        elif action == "redirect":
            attempt._redirect_to(_vector(fields["NeedleDirectionMri"][i]))
        elif action == "inject":
            attempt.inject(amount)
        else:
            raise RehearsalError(f"frame {i}: unknown action {action!r}", recording.source_path)
    return attempt.finish()


def _vector(text: str | None) -> np.ndarray:
    values = [float(v) for v in (text or "").split()]
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise RehearsalError(f"a recorded vector must be 3 finite numbers, got {text!r}")
    return np.array(values)
