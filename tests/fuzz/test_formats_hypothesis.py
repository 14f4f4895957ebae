"""Property per format: any input ends in a clean WorkbenchError or in a result the validation layer accepts.

Hypothesis builds the inputs (values a reader must refuse or accept: huge, non-finite, of the
wrong type, far away) into valid base documents and headers; each goes through the same
functions the CLI and notebooks use (:mod:`workbench.fuzzing.formats`). Readers that could
crash the process run in a forked child (``run_isolated``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import WorkbenchError
from workbench.fuzzing.formats import FORMATS
from workbench.io._crash_guard import run_isolated

_SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.sampled_from([0, -1, 1e-320, 1e308, 5e-4, 1e4 + 1]),
)
_VALUES = st.one_of(_NUMBERS, st.none(), st.booleans(), st.text(max_size=8), st.lists(_NUMBERS, max_size=5))


@pytest.fixture(scope="module")
def bases(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("bases")
    return {name: FORMATS[name].bases(shared_data, folder / name) for name in ("case", "plan", "markups", "device_set", "volume")}


def _outcome(name: str, folder: Path, main: str, isolated: bool = False) -> str:
    """'clean_error' or 'accepted'; anything else (another exception, garbage accepted) fails the test."""
    fmt = FORMATS[name]
    try:
        if isolated:
            result = run_isolated(fmt.run, folder, main, path=folder / main, what="reader")
        else:
            result = fmt.run(folder, main)
    except WorkbenchError:
        return "clean_error"
    fmt.check(result, folder / main)  # a WorkbenchError here is garbage accepted: the test fails
    return "accepted"


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)


def _leaves(value, parts=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*parts, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, (*parts, index))
    else:
        yield parts


def _replace(document, parts, value):
    node = document
    for key in parts[:-1]:
        node = node[key]
    node[parts[-1]] = value


def _dumps(value) -> str:
    """JSON with Python's spelling of NaN/Infinity, and huge integers kept as literals."""
    return json.dumps(value, allow_nan=True)


@pytest.mark.parametrize("name", ["case", "plan", "markups"])
@_SETTINGS
@given(data=st.data())
def test_json_documents_with_hostile_values(tmp_path_factory, bases, name, data):
    base = data.draw(st.sampled_from(bases[name]))
    document = json.loads(base.files[base.main])
    leaves = [p for p in _leaves(document) if p]
    for parts in data.draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=3, unique=True)):
        _replace(document, parts, data.draw(_VALUES))
    folder = tmp_path_factory.mktemp(name)
    _write(folder, {**base.files, base.main: _dumps(document).encode()})
    assert _outcome(name, folder, base.main) in ("clean_error", "accepted")


_MET_FIELDS = {
    "NDims": st.one_of(st.integers(-2, 2000).map(str), st.text(max_size=4)),
    "DimSize": st.lists(st.integers(-3, 10**7), min_size=0, max_size=5).map(lambda v: " ".join(map(str, v))),
    "ElementSpacing": st.lists(_NUMBERS, min_size=1, max_size=4).map(lambda v: " ".join(map(str, v))),
    "Offset": st.lists(_NUMBERS, min_size=1, max_size=4).map(lambda v: " ".join(map(str, v))),
    "TransformMatrix": st.lists(st.floats(-2, 2), min_size=4, max_size=10).map(lambda v: " ".join(map(str, v))),
    "ElementType": st.sampled_from(["MET_UCHAR", "MET_SHORT", "MET_DOUBLE", "MET_OTHER", "MET_STRING", "uchar", ""]),
    "ElementNumberOfChannels": st.integers(-1, 10**6).map(str),
    "CompressedData": st.sampled_from(["True", "False", "maybe"]),
    "HeaderSize": st.integers(-5, 10**6).map(str),
}


@_SETTINGS
@given(data=st.data())
def test_metaimage_headers_never_crash_itk(tmp_path_factory, bases, data):
    base = next(b for b in bases["volume"] if b.main == "volume.mha")
    text = base.files["volume.mha"]
    head, _, voxels = text.partition(b"ElementDataFile = LOCAL\n")
    lines = head.decode("latin-1").splitlines()
    for key in data.draw(st.lists(st.sampled_from(sorted(_MET_FIELDS)), min_size=1, max_size=3, unique=True)):
        value = data.draw(_MET_FIELDS[key])
        lines = [line for line in lines if not line.startswith(key + " ")] + [f"{key} = {value}"]
    folder = tmp_path_factory.mktemp("mha")
    _write(folder, {"volume.mha": ("\n".join(lines) + "\nElementDataFile = LOCAL\n").encode("latin-1", "replace") + voxels})
    assert _outcome("volume", folder, "volume.mha", isolated=True) in ("clean_error", "accepted")


_RECONSTRUCTION_ATTRIBUTES = st.sampled_from(
    ["OutputSpacing", "OutputOrigin", "OutputExtent", "ClipRectangleSize", "FanAnglesDeg", "SkipInterval", "NumberOfThreads"]
)


@_SETTINGS
@given(data=st.data())
def test_device_set_attributes(tmp_path_factory, bases, data):
    base = data.draw(st.sampled_from(bases["device_set"]))
    text = base.files[base.main].decode("utf-8", "replace")
    attribute = data.draw(_RECONSTRUCTION_ATTRIBUTES)
    values = " ".join(str(v) for v in data.draw(st.lists(_NUMBERS, min_size=1, max_size=6)))
    text = re.sub(rf'\s{attribute}="[^"]*"', "", text)
    text = text.replace("<VolumeReconstruction", f'<VolumeReconstruction {attribute}="{values}"', 1)
    folder = tmp_path_factory.mktemp("xml")
    _write(folder, {base.main: text.encode()})
    assert _outcome("device_set", folder, base.main) in ("clean_error", "accepted")
