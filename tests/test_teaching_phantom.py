"""Phantom variants of the teaching library: transitional vertebra, foraminal narrowing; the
defaults unchanged (issue 19)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from workbench import __version__
from workbench.anatomy import Label
from workbench.errors import PhantomError
from workbench.phantom.anatomy import SpineParameters, build_phantom
from workbench.phantom.democase import DEFAULT_DEMO_CASE, DemoCaseSpec
from workbench.phantom.mri import MRI_SYNTHESIS_VERSION

NEURAL = (Label.NERVE_ROOT, Label.DORSAL_ROOT_GANGLION, Label.RADICULAR_ARTERY)


@pytest.fixture(scope="module")
def phantoms():
    base = SpineParameters(seed=3, spacing_mm=1.0)
    variants = {
        "default": base,
        "sacralised": dataclasses.replace(base, transitional="sacralised-L5"),
        "lumbarised": dataclasses.replace(base, transitional="lumbarised-S1"),
        "stenosis": dataclasses.replace(base, foraminal_stenosis=1.0),
    }
    return {name: build_phantom(params) for name, params in variants.items()}


def _array(phantom) -> np.ndarray:
    return sitk.GetArrayFromImage(phantom.labels)


def test_demo_spec_cache_key_and_ground_truth_spec_unchanged_at_defaults():
    old_fields = {k: v for k, v in dataclasses.asdict(DEFAULT_DEMO_CASE).items()
                  if k not in ("scoliosis_deg", "transitional", "foraminal_stenosis")}
    old_text = json.dumps({**old_fields, "software": __version__, "mri_synthesis": MRI_SYNTHESIS_VERSION}, sort_keys=True)
    assert DEFAULT_DEMO_CASE.digest() == hashlib.sha256(old_text.encode()).hexdigest()[:12]
    assert DEFAULT_DEMO_CASE.as_dict() == old_fields
    varied = dataclasses.replace(DEFAULT_DEMO_CASE, transitional="lumbarised-S1", scoliosis_deg=12.0)
    assert varied.as_dict()["transitional"] == "lumbarised-S1" and varied.as_dict()["scoliosis_deg"] == 12.0
    assert "foraminal_stenosis" not in varied.as_dict() and varied.digest() != DEFAULT_DEMO_CASE.digest()


def test_variant_parameters_are_checked():
    with pytest.raises(PhantomError, match="transitional must be one of none, sacralised-L5, lumbarised-S1"):
        SpineParameters(transitional="sacralized")
    with pytest.raises(PhantomError, match="foraminal_stenosis must be within 0..1"):
        SpineParameters(foraminal_stenosis=1.5)
    with pytest.raises(PhantomError, match="transitional"):  # a demo spec is checked when its phantom is built
        SpineParameters(transitional=DemoCaseSpec(transitional="six lumbar").transitional)


def test_sacralised_l5_fuses_the_l5_s1_disc_and_facets(phantoms):
    plain, fused = phantoms["default"], phantoms["sacralised"]
    mid = (plain.vertebra_centres_lps["L5"] + plain.vertebra_centres_lps["S1"]) / 2
    assert plain.label_at(mid)[0] in (Label.DISC_ANNULUS, Label.DISC_NUCLEUS)
    assert fused.label_at(mid)[0] == Label.VERTEBRAL_BODY and fused.level_at(mid)[0] == 5  # L5's bone
    before, after = _array(plain), _array(fused)
    disc = np.isin(before, [Label.DISC_ANNULUS, Label.DISC_NUCLEUS])
    assert np.isin(after, [Label.DISC_ANNULUS, Label.DISC_NUCLEUS]).sum() < disc.sum()
    # the L4-L5 disc is untouched: only the L5-S1 disc space changed
    upper = (plain.vertebra_centres_lps["L4"] + plain.vertebra_centres_lps["L5"]) / 2
    assert fused.label_at(upper)[0] == plain.label_at(upper)[0]
    for side in ("left", "right"):
        joint = plain.landmarks_lps[f"L5-S1 {side} facet joint"]
        index = np.round((joint - np.array(plain.labels.GetOrigin())) / 1.0).astype(int)
        box = tuple(slice(i - 4, i + 5) for i in index[::-1])
        assert (before[box] == Label.FACET_JOINT).sum() > 0
        assert (after[box] == Label.FACET_JOINT).sum() == 0


def test_lumbarised_s1_gets_a_rudimentary_disc_in_the_sacrum_only(phantoms):
    before, after = _array(phantoms["default"]), _array(phantoms["lumbarised"])
    changed = before != after
    assert changed.sum() > 1000  # about 3 mm x the S1 body's outline (~45 x 30 mm)
    assert set(np.unique(before[changed])) == {Label.SACRUM}
    assert set(np.unique(after[changed])) == {Label.DISC_ANNULUS}


def test_foraminal_narrowing_adds_bone_and_never_touches_the_roots(phantoms):
    before, after = _array(phantoms["default"]), _array(phantoms["stenosis"])
    for label in NEURAL:
        assert (after == label).sum() == (before == label).sum()
    added = (after == Label.ARTICULAR_PROCESS) & (before != Label.ARTICULAR_PROCESS)
    six_spheres_mm3 = 6 * 4.0 / 3.0 * math.pi * 4.5**3  # L3-L5, both sides, radius 1.5 + 3 at grade 1
    assert 0.5 * six_spheres_mm3 < added.sum() <= 1.05 * six_spheres_mm3
    # the new bone narrows the space around the roots: it reaches the root sleeve (grade 1) and
    # lies within one osteophyte diameter of a root
    from scipy.ndimage import distance_transform_edt

    to_root_mm = distance_transform_edt(before != Label.NERVE_ROOT)
    assert to_root_mm[added].min() <= 1.5
    assert to_root_mm[added].max() <= 2 * 4.5 + 1.5
