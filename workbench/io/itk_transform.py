"""ITK transform files (``.tfm`` text, ``.h5`` HDF5): reading what they hold.

ITK files are in LPS and store the *resampling* direction: the transform maps points of the
fixed image space to the moving image space (see ``docs/frames.md``, "Edges to other
conventions"). This module reports what a file holds; it does not re-interpret the direction.

The text format is parsed here rather than through SimpleITK because SimpleITK's factory no
longer registers some transform types still found in the wild (e.g. ``Rigid3DTransform``,
``BSplineDeformableTransform``), and ``workbench info`` must describe those files too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io._crash_guard import run_isolated
from workbench.io.paths import require_regular_file
from workbench.validation import check_affine

__all__ = ["ItkTransformEntry", "read_tfm_text", "describe_transform"]

_TEXT_MAGIC = "#Insight Transform File"
# Transform types whose parameters are a 3x3 matrix (row major) then a translation, with the
# centre of rotation as fixed parameters (itk::MatrixOffsetTransformBase layout).
_MATRIX_OFFSET_TYPES = {
    "AffineTransform",
    "Rigid3DTransform",
    "MatrixOffsetTransformBase",
    "FixedCenterOfRotationAffineTransform",
}
_TYPE_RE = re.compile(r"^(?P<base>[A-Za-z0-9]+?)_(?P<precision>double|float)_(?P<dim_in>\d)_(?P<dim_out>\d)$")


@dataclass(frozen=True)
class ItkTransformEntry:
    """One transform of an ITK transform file.

    Attributes
    ----------
    type_name : str
        As written in the file, e.g. ``"AffineTransform_double_3_3"``.
    parameters, fixed_parameters : (P,) and (F,) float arrays
    """

    type_name: str
    parameters: np.ndarray
    fixed_parameters: np.ndarray

    @property
    def base_type(self) -> str:
        m = _TYPE_RE.match(self.type_name)
        return m.group("base") if m else self.type_name

    def matrix_4x4(self) -> np.ndarray | None:
        """(4, 4) homogeneous matrix (LPS mm, ITK resampling direction) for matrix-offset 3D types, else None.

        ITK maps ``x`` to ``M (x - c) + t + c`` with centre ``c`` (fixed parameters).
        """
        if self.base_type not in _MATRIX_OFFSET_TYPES or self.parameters.size != 12:
            return None
        linear = self.parameters[:9].reshape(3, 3)
        translation = self.parameters[9:12]
        centre = self.fixed_parameters[:3] if self.fixed_parameters.size >= 3 else np.zeros(3)
        out = np.eye(4)
        out[:3, :3] = linear
        out[:3, 3] = translation + centre - linear @ centre
        return out


def _numbers(text: str, what: str, path: Path, line_no: int) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split()], dtype=float)
    except ValueError:
        raise WorkbenchError(f"line {line_no}: {what} holds a value that is not a number", path) from None
    if not np.all(np.isfinite(values)):
        raise WorkbenchError(f"line {line_no}: {what} holds NaN or infinity", path)
    return values


def read_tfm_text(path: str | Path) -> list[ItkTransformEntry]:
    """Read every transform of an ITK text transform file (``#Insight Transform File V1.0``)."""
    path = require_regular_file(path, WorkbenchError, "transform file")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or not lines[0].startswith(_TEXT_MAGIC):
        raise WorkbenchError(f"not an ITK text transform file (first line is not '{_TEXT_MAGIC} ...')", path)
    entries: list[ItkTransformEntry] = []
    current: dict[str, object] = {}
    for line_no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise WorkbenchError(f"line {line_no}: expected 'Key: value', got {line[:40]!r}", path)
        key = key.strip()
        if key == "Transform":
            if current:
                entries.append(_finish_entry(current, path))
            current = {"type": value.strip()}
        elif key in ("Parameters", "FixedParameters"):
            if not current:
                raise WorkbenchError(f"line {line_no}: {key} before any 'Transform:' line", path)
            current[key] = _numbers(value, key, path, line_no)
    if current:
        entries.append(_finish_entry(current, path))
    if not entries:
        raise WorkbenchError("ITK transform file holds no transform", path)
    return entries


def _finish_entry(fields: dict[str, object], path: Path) -> ItkTransformEntry:
    type_name = str(fields["type"])
    if "Parameters" not in fields:
        raise WorkbenchError(f"transform {type_name} has no Parameters line", path)
    return ItkTransformEntry(
        type_name=type_name,
        parameters=fields["Parameters"],  # type: ignore[arg-type]
        fixed_parameters=fields.get("FixedParameters", np.zeros(0)),  # type: ignore[arg-type]
    )


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _read_with_simpleitk(path: Path) -> list[ItkTransformEntry]:
    """Read an HDF5 transform file with SimpleITK, in a forked child: a corrupt file can crash HDF5."""
    with open(path, "rb") as fh:
        if fh.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            raise WorkbenchError(
                f"not an ITK transform file (neither '{_TEXT_MAGIC} ...' text nor HDF5)", path
            )
    raw = run_isolated(_sitk_entries, str(path), path=path, what="SimpleITK cannot read this transform file")
    entries = []
    for type_name, parameters, fixed in raw:
        entry = ItkTransformEntry(
            type_name=type_name,
            parameters=np.asarray(parameters, dtype=float),
            fixed_parameters=np.asarray(fixed, dtype=float),
        )
        if not (np.all(np.isfinite(entry.parameters)) and np.all(np.isfinite(entry.fixed_parameters))):
            raise WorkbenchError(f"transform {type_name} holds NaN or infinity", path)
        entries.append(entry)
    return entries


def _sitk_entries(filename: str) -> list[tuple[str, tuple, tuple]]:
    """(type name, parameters, fixed parameters) of every transform SimpleITK reads from ``filename``."""
    import SimpleITK as sitk

    try:
        transform = sitk.ReadTransform(filename)
    except RuntimeError as exc:
        missing = re.search(r'Could not create an instance of "([^"]+)"', str(exc))
        raise WorkbenchError(
            f"transform type {missing.group(1)} is not supported by SimpleITK"
            if missing
            else "SimpleITK cannot read this transform file"
        ) from None
    composite = sitk.CompositeTransform(transform)
    entries = []
    for i in range(composite.GetNumberOfTransforms()):
        t = composite.GetNthTransform(i)
        entries.append(
            (f"{t.GetName()}_double_{t.GetDimension()}_{t.GetDimension()}", tuple(t.GetParameters()), tuple(t.GetFixedParameters()))
        )
    return entries


def describe_transform(path: str | Path) -> dict:
    """Describe an ITK transform file for ``workbench info`` (``kind`` = ``"transform"``)."""
    path = require_regular_file(path, WorkbenchError, "transform file")
    with open(path, "rb") as fh:
        is_text = fh.read(len(_TEXT_MAGIC)) == _TEXT_MAGIC.encode()
    entries = read_tfm_text(path) if is_text else _read_with_simpleitk(path)
    described = []
    for entry in entries:
        item: dict[str, object] = {
            "type": entry.type_name,
            "parameters": int(entry.parameters.size),
            "fixed_parameters": int(entry.fixed_parameters.size),
        }
        matrix = entry.matrix_4x4()
        if matrix is not None:
            check_affine(matrix, f"transform {entry.type_name}", path)  # finite, within 10 m, not singular
            item["matrix_4x4"] = [float(v) for v in matrix.ravel()]
        described.append(item)
    return {
        "kind": "transform",
        "path": str(path),
        "format": "itk-text" if is_text else "itk-hdf5",
        "convention": "LPS, ITK resampling direction (fixed to moving)",
        "transforms": described,
    }
