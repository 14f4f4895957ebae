"""Plan model: needle catalogue, trajectory geometry against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.errors import PlanError
from workbench.frames import Transform
from workbench.planning.model import (
    NEEDLE_CATALOGUE,
    NeedleSpec,
    Plan,
    RegistrationSummary,
    Trajectory,
    angle_to_plane_deg,
    derive_geometry,
    shortest_needle,
)

NEEDLE_90 = NeedleSpec(90.0, "22G")


def _trajectory(**changes) -> Trajectory:
    fields = dict(name="L4 right", structure="L4 right exiting nerve root", target_lps_mm=(0.0, 0.0, 0.0),
                  entry_lps_mm=(0.0, 30.0, 40.0), needle=NEEDLE_90)
    return Trajectory(**{**fields, **changes})


def test_catalogue_holds_the_study_needles_with_iso_radii():
    assert list(NEEDLE_CATALOGUE) == ["50 mm 23G", "90 mm 22G", "120 mm 22G"]
    assert NEEDLE_CATALOGUE["50 mm 23G"].radius_mm == pytest.approx(0.321)
    assert NEEDLE_CATALOGUE["90 mm 22G"].radius_mm == pytest.approx(0.359)


def test_shortest_needle_keeps_the_margin_and_takes_an_edited_catalogue():
    assert shortest_needle(39.0, 10.0).label == "50 mm 23G"
    assert shortest_needle(41.0, 10.0).label == "90 mm 22G"
    assert shortest_needle(200.0, 10.0).label == "120 mm 22G"
    custom = {"70 mm 22G": NeedleSpec(70.0, "22G")}
    assert shortest_needle(41.0, 10.0, custom).length_mm == 70.0
    with pytest.raises(PlanError, match="catalogue is empty"):
        shortest_needle(10.0, 10.0, {})


def test_depth_and_angles_match_hand_computed_geometry():
    # direction (0, -0.6, -0.8): in the sagittal plane, 53.13 deg to axial, 36.87 deg to coronal
    trajectory = _trajectory(skin_normal_lps=(0.0, 1.0, 0.0))
    g = derive_geometry(trajectory)
    assert g.insertion_depth_mm == pytest.approx(50.0)
    assert g.remaining_needle_mm == pytest.approx(40.0)
    assert g.angle_to_axial_deg == pytest.approx(math.degrees(math.asin(0.8)))
    assert g.angle_to_sagittal_deg == pytest.approx(0.0)
    assert g.angle_to_coronal_deg == pytest.approx(math.degrees(math.asin(0.6)))
    assert g.angle_to_skin_normal_deg == pytest.approx(math.degrees(math.acos(0.6)))
    assert g.entry_reference_mm is None


def test_perpendicular_path_has_zero_angle_to_the_skin_normal():
    g = derive_geometry(_trajectory(entry_lps_mm=(0.0, 30.0, 0.0), skin_normal_lps=(0.0, 2.0, 0.0)))
    assert g.angle_to_skin_normal_deg == pytest.approx(0.0, abs=1e-6)
    assert g.angle_to_coronal_deg == pytest.approx(90.0)


def test_reference_coordinates_go_through_the_inverse_of_reference_to_mri():
    # ReferenceToMri: rotate 90 deg about z (x_ref -> y_mri) then shift by (10, 0, 0)
    matrix = np.array([[0.0, -1.0, 0.0, 10.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1]])
    g = derive_geometry(_trajectory(), Transform.from_name("ReferenceToMri", matrix))
    # Mri entry (0, 30, 40): x_ref = y_mri = 30, y_ref = -(x_mri - 10) = 10
    assert g.entry_reference_mm == pytest.approx((30.0, 10.0, 40.0))
    assert g.target_reference_mm == pytest.approx((0.0, 10.0, 0.0))
    # Reference direction (-0.6, 0, -0.8): 53.13 deg to xy, 36.87 deg to yz, 0 to xz
    assert g.angle_to_reference_planes_deg["xy"] == pytest.approx(math.degrees(math.asin(0.8)))
    assert g.angle_to_reference_planes_deg["yz"] == pytest.approx(math.degrees(math.asin(0.6)))
    assert g.angle_to_reference_planes_deg["xz"] == pytest.approx(0.0)


def test_angle_to_plane_is_symmetric_in_direction():
    assert angle_to_plane_deg((1.0, 1.0, 0.0), (0.0, 1.0, 0.0)) == pytest.approx(45.0)
    assert angle_to_plane_deg((-1.0, -1.0, 0.0), (0.0, 1.0, 0.0)) == pytest.approx(45.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"entry_lps_mm": (0.0, 0.0, 0.0)}, "entry and target are the same point"),
        ({"target_lps_mm": (0.0, float("nan"), 0.0)}, "target must be 3 finite numbers"),
        ({"entry_lps_mm": (1.0, 2.0)}, "entry must be 3 finite numbers"),
        ({"injectate_ml": -1.0}, "injectate volume must be >= 0 mL"),
        ({"skin_normal_lps": (0.0, 0.0, 0.0)}, "skin normal has zero length"),
        ({"name": "  "}, "non-empty name"),
    ],
)
def test_bad_trajectories_are_refused(changes, message):
    with pytest.raises(PlanError, match=message):
        _trajectory(**changes)


def test_bad_needles_and_plans_are_refused():
    with pytest.raises(PlanError, match="unknown needle gauge '19G'"):
        NeedleSpec(50.0, "19G")
    with pytest.raises(PlanError, match="needle length must be a positive number"):
        NeedleSpec(0.0, "22G")
    with pytest.raises(PlanError, match="repeated: L4 right"):
        Plan("P1", (_trajectory(), _trajectory()))
    with pytest.raises(PlanError, match="must be ReferenceToMri, got MriToReference"):
        RegistrationSummary("x", Transform.identity("Mri", "Reference"))
