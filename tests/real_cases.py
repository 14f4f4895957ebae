"""Fresh cases made by ``new_case`` from the real public data of ``../shared/data``.

Pytest fixtures for any test that needs "a case as a new user makes it" (the notebooks' tests
among them). Each case is built once per session into ``tmp_path_factory`` and copied for every
test, so a test may edit its copy freely. Use them with::

    from tests.real_cases import fresh_dicom_case_fixture, fresh_nifti_case_fixture  # noqa: F401 (fixtures)

    def test_something(fresh_nifti_case):
        case = load_case(fresh_nifti_case)

The fixtures are named ``fresh_nifti_case`` and ``fresh_dicom_case``; their functions carry a
``_fixture`` suffix so that importing them does not shadow the test arguments (ruff F811).
Only these two need importing (no session fixture behind them). The builders
(:func:`build_nifti_case`, :func:`build_dicom_case`) are plain functions too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

#: The real inputs, relative to ``../shared/data``.
NIFTI_MRI = Path("mri-nifti-sct-t2-lumbar/t2_lumbar.nii.gz")
DICOM_MRI = Path("mri-dicom-dcm_qa_decubitus/HFS/3_t1_fl2d_sag")
DICOM_ROOT = Path("mri-dicom-dcm_qa_decubitus")
SWEEP = Path("plus-spine-phantom-freehand/SpinePhantomFreehand.igs.mha")
DEVICE_SET = Path("plus-spine-phantom-freehand/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml")

NIFTI_CASE_ID = "REAL-NIFTI-1"
DICOM_CASE_ID = "REAL-DICOM-1"


def build_nifti_case(out_dir: Path, shared_data: Path = SHARED_DATA) -> Path:
    """The SCT lumbar T2 NIfTI with the PLUS spine-phantom sweep and its device set."""
    from workbench.case.create import new_case

    return new_case(
        out_dir,
        mri=shared_data / NIFTI_MRI,
        sweeps=[shared_data / SWEEP],
        device_set=shared_data / DEVICE_SET,
        case_id=NIFTI_CASE_ID,
    )


def build_dicom_case(out_dir: Path, shared_data: Path = SHARED_DATA) -> Path:
    """The dcm_qa_decubitus DICOM folder (de-identified on the way in) with the same sweep and device set."""
    from workbench.case.create import new_case

    return new_case(
        out_dir,
        mri=shared_data / DICOM_ROOT,
        sweeps=[shared_data / SWEEP],
        device_set=shared_data / DEVICE_SET,
        case_id=DICOM_CASE_ID,
    )


_BUILT: dict[tuple[int, str], Path] = {}
_BUILDERS = {"nifti": build_nifti_case, "dicom": build_dicom_case}


def _built(kind: str, tmp_path_factory) -> Path:
    """The case of ``kind``, built on first use in this session (keyed by the session's tmp_path_factory)."""
    key = (id(tmp_path_factory), kind)
    if key not in _BUILT:
        if not SHARED_DATA.is_dir():
            pytest.fail(f"shared test data not found at {SHARED_DATA} (set WORKBENCH_SHARED_DATA)")
        _BUILT[key] = _BUILDERS[kind](tmp_path_factory.mktemp(f"real-{kind}-case") / kind)
    return _BUILT[key]


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


@pytest.fixture(name="fresh_nifti_case")
def fresh_nifti_case_fixture(tmp_path_factory, tmp_path) -> Path:
    """A copy of a fresh case from the real NIfTI MRI, sweep and device set (case id ``REAL-NIFTI-1``)."""
    return _copy(_built("nifti", tmp_path_factory), tmp_path)


@pytest.fixture(name="fresh_dicom_case")
def fresh_dicom_case_fixture(tmp_path_factory, tmp_path) -> Path:
    """A copy of a fresh case from the real DICOM series, sweep and device set (case id ``REAL-DICOM-1``)."""
    return _copy(_built("dicom", tmp_path_factory), tmp_path)
