"""Coordinate frames and the transforms between them.

Every transform knows the frame it maps from and the frame it maps to, and is named
``FromToTo`` as in PLUS (``ImageToProbe``, ``ProbeToReference``, ``ReferenceToMri``).
Frame names never contain ``"To"``. Matrices are 4x4 homogeneous; points are column
vectors multiplied from the left, so a chain reads with the inner names cancelling::

    image_to_mri = reference_to_mri @ probe_to_reference @ image_to_probe

The table of frames (origin, axes, unit) is ``docs/frames.md``.

A :class:`TransformRepository` stores transforms as edges of a graph and answers
``get("ImageToMri")`` by finding a path and composing (and inverting) edges, as the
PLUS transform repository does.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from workbench.errors import FrameError

__all__ = [
    "Transform",
    "TransformRepository",
    "apply",
    "apply_affine",
    "apply_linear",
    "image_index_to_physical",
    "is_transform_name",
    "split_transform_name",
    "transform_name",
    "validate_frame_name",
]

_FRAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# PLUS parses a transform name at the "To" that starts a capitalised word ("ProbeToTracker"),
# so "Tool" is a valid frame name but "ProbeTo" or "ToTracker" are not.
_SPLIT_RE = re.compile(r"To(?=[A-Z])")
_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])


def validate_frame_name(name: str) -> str:
    """Return ``name`` if it is a valid frame name, else raise :class:`FrameError`.

    A frame name starts with a letter and holds letters, digits and ``_`` only. It must not
    contain the word ``To`` (``To`` followed by a capital letter, or at the end), which would
    make transform names ambiguous; ``Tool`` or ``Photo`` are fine, as in PLUS.
    """
    if not isinstance(name, str) or not _FRAME_RE.match(name):
        raise FrameError(f"invalid frame name {name!r}: use letters, digits and '_', starting with a letter")
    if _SPLIT_RE.search(name) or name.endswith("To"):
        raise FrameError(f"invalid frame name {name!r}: frame names must not contain the word 'To'")
    return name


def is_transform_name(name: str) -> bool:
    """True when ``name`` splits into two frame names as :func:`split_transform_name` does.

    >>> is_transform_name("ProbeToTracker"), is_transform_name("Timestamp")
    (True, False)
    """
    try:
        split_transform_name(name)
    except FrameError:
        return False
    return True


def split_transform_name(name: str) -> tuple[str, str]:
    """Split a ``FromToTo`` transform name into its two frame names.

    The split is at the one ``To`` that starts a capitalised word, as PLUS parses names; a
    trailing ``"Transform"`` (as in PLUS sequence fields) is ignored.

    >>> split_transform_name("ProbeToReference")
    ('Probe', 'Reference')
    >>> split_transform_name("ToolToTracker")
    ('Tool', 'Tracker')
    """
    base = name[: -len("Transform")] if isinstance(name, str) and name.endswith("Transform") else name
    matches = list(_SPLIT_RE.finditer(base)) if isinstance(base, str) else []
    if len(matches) != 1 or matches[0].start() == 0:
        raise FrameError(
            f"invalid transform name {name!r}: expected <From>To<To> with exactly one 'To' before a capital letter"
        )
    split = matches[0]
    return validate_frame_name(base[: split.start()]), validate_frame_name(base[split.end() :])


def transform_name(from_frame: str, to_frame: str) -> str:
    """Name of the transform from ``from_frame`` to ``to_frame``, e.g. ``"ImageToProbe"``."""
    return f"{validate_frame_name(from_frame)}To{validate_frame_name(to_frame)}"


def apply_affine(matrix: np.ndarray, points: np.ndarray | Iterable[float]) -> np.ndarray:
    """Map positions (w = 1) through a (4, 4) affine, as nibabel's ``affines.apply_affine``.

    Pure geometry on raw matrices, for inner loops where building a :class:`Transform` per call
    would cost too much; :meth:`Transform.apply_to_points` is built on it and checks frames.
    Computes ``points @ matrix[:3, :3].T + matrix[:3, 3]`` on the array as given (no copy, no
    change of dtype), so results are bit for bit those of that expression written by hand.

    Parameters
    ----------
    matrix : (4, 4) float array
        Homogeneous matrix (docs/frames.md convention: column vectors multiplied from the left).
    points : (..., 3) array
        Positions in the matrix's *from* frame and unit.

    Returns
    -------
    (..., 3) float array
        Positions in the *to* frame and unit; same leading shape as ``points``.

    Examples
    --------
    >>> import numpy as np
    >>> pixels_to_mm = np.diag([0.5, 0.5, 1.0, 1.0])
    >>> pixels_to_mm[:3, 3] = [10.0, 0.0, 0.0]
    >>> apply_affine(pixels_to_mm, [[2.0, 4.0, 0.0]])
    array([[11.,  2.,  0.]])
    """
    matrix = np.asarray(matrix, dtype=float)
    points = np.asarray(points)
    if matrix.shape != (4, 4):
        raise FrameError(f"matrix must be 4x4, got shape {matrix.shape}")
    if points.ndim == 0 or points.shape[-1] != 3:
        raise FrameError(f"points must have shape (..., 3), got {points.shape}")
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def image_index_to_physical(origin, spacing, direction) -> np.ndarray:
    """(4, 4) index-to-physical affine of an ITK image: ``origin + direction @ diag(spacing) @ ijk``.

    For the planning MRI this is ``MriVoxelToMri`` (docs/frames.md).

    Parameters
    ----------
    origin : (3,) float, mm
        Physical position of the centre of voxel (0, 0, 0) (``image.GetOrigin()``).
    spacing : (3,) float, mm
        Voxel size along i, j, k (``image.GetSpacing()``).
    direction : (9,) or (3, 3) float
        Row major; column c is the unit vector of index axis c (``image.GetDirection()``).

    >>> image_index_to_physical((10.0, 0.0, 0.0), (2.0, 1.0, 1.0), np.eye(3).ravel())[:3].tolist()
    [[2.0, 0.0, 0.0, 10.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    """
    matrix = np.eye(4)
    matrix[:3, :3] = np.reshape(np.asarray(direction, dtype=float), (3, 3)) @ np.diag(np.asarray(spacing, dtype=float))
    matrix[:3, 3] = origin
    return matrix


def apply_linear(matrix: np.ndarray, vectors: np.ndarray | Iterable[float]) -> np.ndarray:
    """Map displacements and directions (w = 0) through a (4, 4) affine: its linear part only.

    Parameters
    ----------
    matrix : (4, 4) float array
        Homogeneous matrix; the translation is ignored.
    vectors : (..., 3) array
        Displacements or directions in the *from* frame and unit (not re-normalised).

    Returns
    -------
    (..., 3) float array
        ``vectors @ matrix[:3, :3].T``, in the *to* frame and unit.

    Examples
    --------
    >>> import numpy as np
    >>> shifted = np.eye(4)
    >>> shifted[:3, 3] = [5.0, 5.0, 5.0]
    >>> apply_linear(shifted, [0.0, 0.0, 1.0])
    array([0., 0., 1.])
    """
    matrix = np.asarray(matrix, dtype=float)
    vectors = np.asarray(vectors)
    if matrix.shape != (4, 4):
        raise FrameError(f"matrix must be 4x4, got shape {matrix.shape}")
    if vectors.ndim == 0 or vectors.shape[-1] != 3:
        raise FrameError(f"vectors must have shape (..., 3), got {vectors.shape}")
    return vectors @ matrix[:3, :3].T


def apply(transform: "Transform", points: np.ndarray | Iterable[float], *, from_frame: str) -> np.ndarray:
    """Map positions given in ``from_frame`` through ``transform``, checking the frame.

    Parameters
    ----------
    transform : Transform
        Must start from ``from_frame``.
    points : (3,) or (N, 3) float array
        Positions in ``from_frame`` units.
    from_frame : str
        The frame the points are given in.

    Returns
    -------
    (3,) or (N, 3) float array
        Positions in ``transform.to_frame``.

    Raises
    ------
    FrameError
        If ``from_frame`` is not the transform's source frame.

    Examples
    --------
    >>> import numpy as np
    >>> reference_to_mri = Transform(np.eye(4), "Reference", "Mri")
    >>> apply(reference_to_mri, [1.0, 2.0, 3.0], from_frame="Reference")
    array([1., 2., 3.])
    >>> apply(reference_to_mri, [1.0, 2.0, 3.0], from_frame="Probe")
    Traceback (most recent call last):
    ...
    workbench.errors.FrameError: cannot apply ReferenceToMri to points in 'Probe': it maps points from 'Reference'
    """
    return transform.apply_to_points(points, from_frame=from_frame)


def _as_points(points: np.ndarray | Iterable[float], what: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(points, dtype=float)
    single = arr.ndim == 1
    arr2 = np.atleast_2d(arr)
    if arr2.ndim != 2 or arr2.shape[1] != 3:
        raise FrameError(f"{what} must have shape (3,) or (N, 3), got {arr.shape}")
    return arr2, single


@dataclass(frozen=True, eq=False)
class Transform:
    """An affine (usually rigid) transform from ``from_frame`` to ``to_frame``.

    Parameters
    ----------
    matrix : (4, 4) float array
        Homogeneous matrix taking column vectors in ``from_frame`` to ``to_frame``.
        Translation is in the unit of ``to_frame``; the 3x3 part may carry scale
        (e.g. ``ImageToProbe`` maps pixels to mm). Must be finite with last row
        ``0 0 0 1``.
    from_frame, to_frame : str
        Frame names as in ``docs/frames.md`` (no ``"To"`` inside).

    Examples
    --------
    >>> import numpy as np
    >>> probe_to_reference = Transform(np.eye(4), "Probe", "Reference")
    >>> probe_to_reference.name
    'ProbeToReference'
    """

    matrix: np.ndarray
    from_frame: str
    to_frame: str

    def __post_init__(self) -> None:
        validate_frame_name(self.from_frame)
        validate_frame_name(self.to_frame)
        try:
            m = np.array(self.matrix, dtype=float)
        except (TypeError, ValueError) as exc:
            raise FrameError(f"{self.name}: matrix is not numeric ({exc})") from None
        if m.shape != (4, 4):
            raise FrameError(f"{self.name}: matrix must be 4x4, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise FrameError(f"{self.name}: matrix contains NaN or infinity")
        if not np.allclose(m[3], _LAST_ROW, atol=1e-9):
            raise FrameError(f"{self.name}: last row must be 0 0 0 1, got {m[3].tolist()}")
        if abs(np.linalg.det(m[:3, :3])) < 1e-12:
            raise FrameError(f"{self.name}: matrix is singular")
        m[3] = _LAST_ROW
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, matrix: np.ndarray | Iterable) -> "Transform":
        """Build from a ``FromToTo`` name, e.g. ``Transform.from_name("ImageToProbe", m)``."""
        from_frame, to_frame = split_transform_name(name)
        return cls(np.asarray(matrix, dtype=float), from_frame, to_frame)

    @classmethod
    def identity(cls, from_frame: str, to_frame: str) -> "Transform":
        """Identity transform between two frames that coincide."""
        return cls(np.eye(4), from_frame, to_frame)

    @classmethod
    def from_rotation_translation(
        cls, rotation: np.ndarray, translation_mm: np.ndarray | Iterable[float], from_frame: str, to_frame: str
    ) -> "Transform":
        """Build from a (3, 3) rotation (or linear part) and a (3,) translation in ``to_frame`` units."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(rotation, dtype=float)
        m[:3, 3] = np.asarray(translation_mm, dtype=float)
        return cls(m, from_frame, to_frame)

    # -- properties ---------------------------------------------------------------
    @property
    def name(self) -> str:
        """``FromToTo`` name of this transform."""
        return f"{self.from_frame}To{self.to_frame}"

    @property
    def linear(self) -> np.ndarray:
        """(3, 3) linear part (rotation, possibly with scale)."""
        return self.matrix[:3, :3].copy()

    @property
    def translation(self) -> np.ndarray:
        """(3,) translation, in the unit of ``to_frame``."""
        return self.matrix[:3, 3].copy()

    @property
    def scale(self) -> np.ndarray:
        """(3,) column norms of the linear part: the length in ``to_frame`` units of a unit step along each ``from_frame`` axis."""
        return np.linalg.norm(self.matrix[:3, :3], axis=0)

    def is_rigid(self, tol: float = 1e-4) -> bool:
        """True if the linear part is a proper rotation: ``R^T R = I`` and ``det R = +1`` within ``tol``."""
        r = self.matrix[:3, :3]
        return bool(np.allclose(r.T @ r, np.eye(3), atol=tol) and abs(np.linalg.det(r) - 1.0) < tol)

    # -- algebra ------------------------------------------------------------------
    def __matmul__(self, other: "Transform") -> "Transform":
        """Compose: ``(b_to_c @ a_to_b)`` is ``a_to_c``. Frames must chain.

        Examples
        --------
        The inner names cancel, read right to left; a chain that does not meet is refused:

        >>> import numpy as np
        >>> image_to_probe = Transform(np.diag([0.2, 0.2, 1.0, 1.0]), "Image", "Probe")  # 0.2 mm per pixel
        >>> probe_to_reference = Transform.from_rotation_translation(np.eye(3), [0.0, 0.0, 50.0], "Probe", "Reference")
        >>> image_to_reference = probe_to_reference @ image_to_probe
        >>> image_to_reference.name
        'ImageToReference'
        >>> image_to_reference.apply_to_points([10.0, 20.0, 0.0])
        array([ 2.,  4., 50.])
        >>> image_to_probe @ probe_to_reference  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.FrameError: cannot compose ImageToProbe @ ProbeToReference: ... starts from 'Image'
        """
        if not isinstance(other, Transform):
            return NotImplemented
        if other.to_frame != self.from_frame:
            raise FrameError(
                f"cannot compose {self.name} @ {other.name}: {other.name} ends in {other.to_frame!r} "
                f"but {self.name} starts from {self.from_frame!r}"
            )
        return Transform(self.matrix @ other.matrix, other.from_frame, self.to_frame)

    def inverse(self) -> "Transform":
        """The transform from ``to_frame`` back to ``from_frame``.

        Always a general 4x4 inverse, as PLUS's transform repository computes it: tracker
        matrices are written with 6 significant digits and are orthonormal only to ~1e-6, so
        transposing the rotation would move far points by ~1e-4 mm and change the voxel
        choices of a reconstruction compared with PLUS.

        Examples
        --------
        >>> import numpy as np
        >>> quarter_turn = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # 90 deg about z
        >>> reference_to_mri = Transform.from_rotation_translation(quarter_turn, [10.0, 0.0, 0.0], "Reference", "Mri")
        >>> mri_to_reference = reference_to_mri.inverse()
        >>> mri_to_reference.name
        'MriToReference'
        >>> mri_to_reference.apply_to_points([8.0, 3.0, 5.0])
        array([3., 2., 5.])
        >>> (mri_to_reference @ reference_to_mri).allclose(Transform.identity("Reference", "Reference"))
        True
        """
        return Transform(np.linalg.inv(self.matrix), self.to_frame, self.from_frame)

    def apply_to_points(self, points: np.ndarray | Iterable[float], *, from_frame: str | None = None) -> np.ndarray:
        """Map positions (w = 1) from ``from_frame`` to ``to_frame`` (:func:`apply_affine`).

        Parameters
        ----------
        points : (3,) or (N, 3) float array
            Positions in ``from_frame`` units.
        from_frame : str, optional
            The frame the points are given in; if given it must be this transform's
            ``from_frame``.

        Returns
        -------
        (3,) or (N, 3) float array
            Positions in ``to_frame`` units; same shape as the input.

        Raises
        ------
        FrameError
            Points of another shape, or given in another frame than the transform's source.

        Examples
        --------
        >>> import numpy as np
        >>> reference_to_mri = Transform.from_rotation_translation(np.eye(3), [1.0, 2.0, 3.0], "Reference", "Mri")
        >>> reference_to_mri.apply_to_points([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], from_frame="Reference")
        array([[ 1.,  2.,  3.],
               [11.,  2.,  3.]])
        >>> reference_to_mri.apply_to_vectors([10.0, 0.0, 0.0])  # a direction: no translation
        array([10.,  0.,  0.])
        >>> reference_to_mri.apply_to_points([0.0, 0.0, 0.0], from_frame="Mri")
        Traceback (most recent call last):
        ...
        workbench.errors.FrameError: cannot apply ReferenceToMri to points in 'Mri': it maps points from 'Reference'
        """
        self._check_source(from_frame, "points")
        pts, single = _as_points(points, "points")
        out = apply_affine(self.matrix, pts)
        return out[0] if single else out

    def apply_to_vectors(self, vectors: np.ndarray | Iterable[float], *, from_frame: str | None = None) -> np.ndarray:
        """Map displacements/directions (w = 0): the translation is not applied (:func:`apply_linear`).

        Directions are not re-normalised: with a scaled linear part (e.g. ``ImageToProbe``)
        the result carries the scale, as a displacement should. ``from_frame`` is checked as
        in :meth:`apply_to_points`.
        """
        self._check_source(from_frame, "vectors")
        vec, single = _as_points(vectors, "vectors")
        out = apply_linear(self.matrix, vec)
        return out[0] if single else out

    def _check_source(self, from_frame: str | None, what: str) -> None:
        if from_frame is not None and from_frame != self.from_frame:
            raise FrameError(
                f"cannot apply {self.name} to {what} in {from_frame!r}: it maps {what} from {self.from_frame!r}"
            )

    def allclose(self, other: "Transform", atol: float = 1e-6) -> bool:
        """Same frames and matrices equal within ``atol``."""
        return (
            self.from_frame == other.from_frame
            and self.to_frame == other.to_frame
            and bool(np.allclose(self.matrix, other.matrix, atol=atol))
        )

    def to_list(self) -> list[float]:
        """The matrix as 16 numbers, row major (as PLUS writes it)."""
        return [float(v) for v in self.matrix.ravel()]

    def __repr__(self) -> str:
        rows = "; ".join(" ".join(f"{v:.6g}" for v in row) for row in self.matrix)
        return f"Transform({self.name}: [{rows}])"


@dataclass
class TransformRepository:
    """A graph of transforms between named frames, answering any connected ``FromToTo``.

    Edges are stored as given; :meth:`get` searches the shortest path between the two
    frames (breadth first) and composes stored edges, inverting those traversed
    backwards. Setting a transform replaces a stored edge between the same two frames
    in either direction, so the graph never holds two contradicting edges.

    Examples
    --------
    >>> import numpy as np
    >>> repo = TransformRepository()
    >>> repo.set_transform(Transform(np.eye(4), "Image", "Probe"))
    >>> repo.set_transform(Transform(np.eye(4), "Probe", "Tracker"))
    >>> repo.set_transform(Transform(np.eye(4), "Reference", "Tracker"))
    >>> repo.get("ImageToReference").name
    'ImageToReference'
    """

    _edges: dict[tuple[str, str], Transform] = field(default_factory=dict)

    def set_transform(self, transform: Transform) -> None:
        """Store ``transform``, replacing any edge between the same two frames."""
        key = (transform.from_frame, transform.to_frame)
        self._edges.pop((key[1], key[0]), None)
        self._edges[key] = transform

    def set_matrix(self, name: str, matrix: np.ndarray) -> None:
        """Store a matrix under a ``FromToTo`` name."""
        self.set_transform(Transform.from_name(name, matrix))

    def remove(self, name: str) -> None:
        """Remove the stored edge ``name`` (or its inverse). Missing edges raise :class:`FrameError`."""
        a, b = split_transform_name(name)
        if self._edges.pop((a, b), None) is None and self._edges.pop((b, a), None) is None:
            raise FrameError(f"no stored transform {name} to remove")

    @property
    def frames(self) -> set[str]:
        """Every frame that appears in a stored transform."""
        return {f for key in self._edges for f in key}

    def __iter__(self) -> Iterator[Transform]:
        return iter(self._edges.values())

    def __len__(self) -> int:
        return len(self._edges)

    def has(self, name: str) -> bool:
        """True if ``name`` can be computed from the stored transforms."""
        try:
            self.get(name)
        except FrameError:
            return False
        return True

    def get(self, name: str) -> Transform:
        """Compute the transform ``name`` (``FromToTo``) from the stored edges.

        Raises
        ------
        FrameError
            If a frame is unknown or the two frames are not connected.
        """
        source, target = split_transform_name(name)
        if source == target:
            return Transform.identity(source, target)
        known = self.frames
        for frame in (source, target):
            if frame not in known:
                raise FrameError(f"cannot compute {name}: no stored transform involves frame {frame!r}")
        path = self._path(source, target)
        if path is None:
            raise FrameError(f"cannot compute {name}: frames {source!r} and {target!r} are not connected")
        result = Transform.identity(source, source)
        for step in path:
            result = step @ result
        return result

    def _path(self, source: str, target: str) -> list[Transform] | None:
        """Breadth-first search; returns the list of transforms (oriented along the path)."""
        neighbours: dict[str, list[tuple[str, Transform, bool]]] = {}
        for (a, b), t in self._edges.items():
            neighbours.setdefault(a, []).append((b, t, False))
            neighbours.setdefault(b, []).append((a, t, True))
        previous: dict[str, tuple[str, Transform, bool] | None] = {source: None}
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            if frame == target:
                break
            for nxt, t, inverted in neighbours.get(frame, []):
                if nxt not in previous:
                    previous[nxt] = (frame, t, inverted)
                    queue.append(nxt)
        if target not in previous:
            return None
        steps: list[Transform] = []
        frame = target
        while previous[frame] is not None:
            prev_frame, t, inverted = previous[frame]
            steps.append(t.inverse() if inverted else t)
            frame = prev_frame
        return steps[::-1]
