"""The plan report's images: honest fused captions, FRE/TRE and quality filled in, labelled views with the path."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from workbench.frames import Transform
from workbench.planning.model import NeedleSpec, Plan, Provenance, RegistrationSummary, Trajectory, registration_summary
from workbench.planning.report import (
    COVERED_RADIUS_MM,
    VIEW_DISPLAY_PX,
    VolumeSampler,
    covers_target,
    fused_grey,
    render_report,
)

REFERENCE_TO_MRI = Transform.from_name("ReferenceToMri", np.eye(4))
PATH_RGB = (0, 220, 255)


def _volumes():
    """A 100 mm MRI cube (1 mm voxels, LPS = index) with structure, and an ultrasound volume that
    holds echoes only in a 30 mm box around (30, 40, 50)."""
    k, j, i = np.indices((100, 100, 100), dtype=np.float32)
    mri = 100.0 + 50.0 * np.sin(i / 7.0) + 30.0 * np.cos(j / 5.0) + k
    us = np.zeros_like(mri)
    box = (slice(35, 66), slice(25, 56), slice(15, 46))  # k (S), j (P), i (L)
    us[box] = 200.0 + 40.0 * np.sin((i[box] + j[box]) / 3.0)
    return VolumeSampler(mri, np.eye(4)), VolumeSampler(us, np.eye(4))


def _plan(registration) -> Plan:
    needle = NeedleSpec(90.0, "22G")
    trajectories = (
        Trajectory("covered", "inside the sweep", (30.0, 40.0, 50.0), (34.0, 90.0, 52.0), needle),
        Trajectory("uncovered", "outside the sweep", (75.0, 40.0, 50.0), (78.0, 92.0, 50.0), needle),
    )
    return Plan("P-1", trajectories, Provenance(mri_digest="ab" * 32, author="QA"), registration, "test")


def _figures(section: str) -> list[tuple[str, np.ndarray | None]]:
    out = []
    for match in re.finditer(r"<figure.*?</figure>", section, re.S):
        figure = match.group(0)
        caption = re.search(r"<figcaption>(.*?)</figcaption>", figure).group(1)
        data = re.search(r'src="data:image/png;base64,([^"]+)"', figure)
        out.append((caption, None if data is None else np.asarray(Image.open(io.BytesIO(base64.b64decode(data.group(1)))))))
    return out


def _sections(text: str) -> dict[str, str]:
    return {re.search(r"<h2>(.*?)</h2>", s).group(1): s for s in text.split('<section class="trajectory">')[1:]}


def test_fused_view_only_where_a_sweep_covers_the_target_and_then_a_real_50_50_blend():
    mri, us = _volumes()
    summary = RegistrationSummary("bone-icp", REFERENCE_TO_MRI, fre_mm=1.2, tre_mm=2.5, registration_id="reg-1",
                                  quality_verdict="accepted")
    text = render_report(_plan(summary), mri, us)
    sections = _sections(text)

    covered = _figures(sections["covered"])
    captions = [c for c, _ in covered]
    assert captions[0].startswith("Fused US/MRI, 50 % blend") and len(covered) == 5
    assert all(image is not None and image.shape == (240, 240, 3) for _, image in covered)
    # the fused image is not the MRI alone: it differs where the sweep holds echoes
    fused, mri_alone = covered[0][1].astype(int), covered[1][1].astype(int)
    changed = np.abs(fused - mri_alone)[..., 0] > 3
    assert 0.05 < changed.mean() < 0.9  # the sweep's part of the plane (30 mm box), the rest the MRI alone

    uncovered = _figures(sections["uncovered"])
    assert uncovered[0] == ("No fused view: no sweep covers this target", None)  # no fake image
    assert len(uncovered) == 5 and all(image is not None for _, image in uncovered[1:])


def test_fused_grey_is_half_mri_half_ultrasound_where_covered():
    mri = np.array([[0.0, 100.0], [50.0, 100.0]])
    us = np.array([[np.nan, 0.0], [200.0, 100.0]])  # covered: the two bottom pixels
    grey = fused_grey(mri, us)
    mri_grey = np.clip((mri - np.percentile(mri, 1)) / (np.percentile(mri, 99.5) - np.percentile(mri, 1)), 0, 1) * 255
    finite = us[np.isfinite(us)]
    us_grey = np.clip((us - np.percentile(finite, 1)) / (np.percentile(finite, 99.5) - np.percentile(finite, 1)), 0, 1) * 255
    assert grey[0] == pytest.approx(mri_grey[0])  # not covered: the MRI alone
    assert grey[1] == pytest.approx(0.5 * mri_grey[1] + 0.5 * us_grey[1])
    # coverage: half of the pixels within 5 mm of the centre
    plane = np.zeros((240, 240))
    assert not covers_target(plane)
    offsets = (np.arange(240) - 120.0) * 0.5
    plane[np.hypot(offsets[:, None], offsets[None, :]) <= COVERED_RADIUS_MM] = 1.0
    assert covers_target(plane)


def test_fre_tre_and_quality_are_filled_in_and_every_view_shows_the_path_with_letters():
    mri, us = _volumes()
    summary = RegistrationSummary("bone-icp", REFERENCE_TO_MRI, fre_mm=1.23, tre_mm=2.57, registration_id="reg-1",
                                  quality_verdict="accepted")
    text = render_report(_plan(summary), mri, us)
    assert "FRE 1.23 mm" in text and "largest predicted TRE 2.57 mm" in text and "quality gate: accepted" in text
    assert "—" not in text.split("<h1>")[1].split("</table>")[0]
    assert f"width: {VIEW_DISPLAY_PX}px" in text  # larger views than the 240 px thumbnails
    for section in _sections(text).values():
        for caption, image in _figures(section):
            if image is None:
                continue
            cyan = np.all(image == PATH_RGB, axis=2)
            assert cyan.sum() >= 20, caption  # the needle path is drawn on every view
        # each view carries its orientation letters: the axial one R/L/A/P
        axial = section.split("<figcaption>Axial MRI through the target")[0].rsplit("<figure>", 1)[1]
        assert [re.search(rf'letter {side}">(\w+)<', axial).group(1) for side in ("left", "right", "top", "bottom")] == [
            "R", "L", "A", "P"]
    # unknown errors say so in words, never a bare dash
    bare = render_report(_plan(RegistrationSummary("landmarks", REFERENCE_TO_MRI)), mri, None)
    assert "FRE not known" in bare and "quality gate: not assessed" in bare
    assert "no fused view (no ultrasound volume to fuse)" in bare


def test_a_saved_registration_brings_its_errors_and_verdict_to_the_plan(tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.case import SavedRegistration, with_registration
    from workbench.widgets.plan import PlanModel
    from workbench.widgets.session import CaseSession, demo_working_copy

    saved = SavedRegistration("reg-q", "bone-icp", Transform.from_name("ReferenceToMri", np.eye(4)), fre_mm=1.5,
                              tre_mm={"x": 2.0}, provenance={"quality": {"verdict": "doubtful", "reasons": ["slip?"]}})
    summary = registration_summary(saved)
    assert (summary.fre_mm, summary.tre_mm, summary.quality_verdict) == (1.5, 2.0, "doubtful")

    session = CaseSession(demo_working_copy(tmp_path / "case"))
    session.save(with_registration(session.case, saved))
    # notebook 04 hands the case's registration over as a transform: its FRE/TRE/verdict are kept
    model = PlanModel(session, saved.reference_to_mri)
    trajectory = model.trajectory(model.targets()[0])
    planned = model.registration_summary((trajectory,))
    assert planned.registration_id == "reg-q" and planned.fre_mm == 1.5 and planned.quality_verdict == "doubtful"
    moved = np.eye(4)
    moved[0, 3] = 1.0
    other = Transform.from_name("ReferenceToMri", moved)
    assert PlanModel(session, other).registration_summary((trajectory,)).registration_id is None  # another transform
