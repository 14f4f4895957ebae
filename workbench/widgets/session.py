"""Case session: which case folder the notebooks work on, and its volumes loaded once.

No UI here: the widgets in :mod:`workbench.widgets` are thin controllers over this model, and tests
drive it without a kernel. A session opens the case folder named by ``$WORKBENCH_CASE`` if set,
else a *working copy* of the built-in demo case (the shared cache in ``~/.cache/workbench`` is never
edited: every change is saved into the copy). Frames and units: docs/frames.md.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from workbench.errors import WorkbenchError

__all__ = [
    "CASE_ENV",
    "LIBRARY_ENV",
    "RESULTS_DB_ENV",
    "SESSION_ENV",
    "WORKDIR_ENV",
    "CaseRegistration",
    "CaseSession",
    "WidgetError",
    "case_registration",
    "demo_working_copy",
    "landmark_registration",
    "library_cases",
    "resolve_case_folder",
    "running_in_voila",
]

#: Environment variable naming the case folder the notebooks open.
CASE_ENV = "WORKBENCH_CASE"
#: Environment variable naming where the demo working copy goes (default ``<cache>/working``).
WORKDIR_ENV = "WORKBENCH_WORKDIR"
#: Environment variable naming a folder of case bundles (``workbench teach --library``): a Voila
#: page opened with ``?case=ID`` works on ``<library>/ID``.
LIBRARY_ENV = "WORKBENCH_LIBRARY"
#: Environment variables of the teaching app with a library (``workbench teach --library --db
#: --session``): the session's results database (SQLite path or URL, never shown on a page) and
#: the session id submissions go under (read by :mod:`workbench.widgets.teacher`).
RESULTS_DB_ENV = "WORKBENCH_RESULTS_DB"
SESSION_ENV = "WORKBENCH_TEACHING_SESSION"
#: What a case id in a page address may be (a folder name, never a path).
_CASE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class WidgetError(WorkbenchError):
    """A widget model was asked something it cannot do (no such point, nothing to undo, no MRI, ...)."""


def demo_working_copy(dest: str | os.PathLike | None = None, fresh: bool = False) -> Path:
    """A writable copy of the built-in demo case (generated and cached on first use).

    Parameters
    ----------
    dest : path, optional
        Folder of the copy. Default ``$WORKBENCH_WORKDIR/demo-case-<digest>``, else
        ``<demo cache>/working/demo-case-<digest>`` (beside, never inside, the cached case).
    fresh : bool
        Replace an existing copy with a new one.

    Returns
    -------
    Path
        The copy's folder (it holds ``case.json``).
    """
    from workbench.phantom.democase import DEFAULT_DEMO_CASE, default_demo_case, demo_cache_dir

    source = default_demo_case(DEFAULT_DEMO_CASE)
    if dest is None:
        root = Path(os.environ[WORKDIR_ENV]) if os.environ.get(WORKDIR_ENV) else demo_cache_dir() / "working"
        dest = root / source.name
    dest = Path(dest)
    if fresh and dest.exists():
        shutil.rmtree(dest)
    if (dest / "case.json").is_file():
        return dest
    staging = dest.with_name(dest.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def resolve_case_folder(folder: str | os.PathLike | None = None) -> Path:
    """The case folder to open: ``folder``, else the library case a Voila page asked for
    (``?case=ID`` with ``$WORKBENCH_LIBRARY``), else ``$WORKBENCH_CASE``, else the demo working copy.

    Raises
    ------
    WidgetError
        If the folder named (argument or environment) has no ``case.json``.
    """
    if folder is None and os.environ.get(LIBRARY_ENV):
        folder = _case_from_query(Path(os.environ[LIBRARY_ENV]), os.environ.get("QUERY_STRING", ""))
    if folder is None and os.environ.get(CASE_ENV):
        folder = os.environ[CASE_ENV]
    if folder is None:
        return demo_working_copy()
    folder = Path(folder).expanduser()
    if not (folder / "case.json").is_file():
        raise WidgetError("no case.json in this folder (set WORKBENCH_CASE to a case bundle)", folder)
    return folder


def running_in_voila() -> bool:
    """True in a kernel that Voila started for a page (it sets ``SERVER_SOFTWARE=voila/<version>``).

    A Voila page runs every cell when it is opened, so cells with side effects (exports) ask this
    first and leave the writing to a button.
    """
    return os.environ.get("SERVER_SOFTWARE", "").startswith("voila/")


def library_cases(library: str | os.PathLike) -> list[Path]:
    """The case bundles of a library folder: its sub-folders holding a ``case.json``, sorted by name.

    Raises
    ------
    WidgetError
        If ``library`` is not a folder or holds no case.
    """
    library = Path(library)
    if not library.is_dir():
        raise WidgetError("case library folder not found", library)
    cases = sorted(p for p in library.iterdir() if p.is_dir() and (p / "case.json").is_file() and _is_case_id(p.name))
    if not cases:
        raise WidgetError("no case bundle (a folder with case.json) in this library", library)
    return cases


def _is_case_id(name: str) -> bool:
    return bool(name) and not name.startswith(".") and set(name) <= _CASE_ID_CHARS


def _case_from_query(library: Path, query: str) -> Path | None:
    """``<library>/ID`` for ``case=ID`` in a page's query string; None when the query names no case.

    The id is a folder name of the library (letters, digits, ``._-``), never a path.
    """
    from urllib.parse import parse_qs

    ids = parse_qs(query).get("case", [])
    if not ids:
        return None
    case_id = ids[-1]
    if not _is_case_id(case_id):
        raise WidgetError(f"not a case id: {case_id!r} (letters, digits, '.', '_' and '-' only)", library)
    folder = library / case_id
    if not (folder / "case.json").is_file():
        raise WidgetError(f"no case {case_id!r} in the library", library)
    return folder


class CaseSession:
    """An open case bundle and what is loaded from it (MRI, label map, sweeps, ground truth).

    Parameters
    ----------
    folder : path, optional
        Case folder; default :func:`resolve_case_folder`.

    Attributes
    ----------
    folder : Path
    case : workbench.case.Case
        The case as last loaded or saved. :meth:`save` writes it back atomically.
    """

    def __init__(self, folder: str | os.PathLike | None = None):
        from workbench.case import load_case

        self.folder = resolve_case_folder(folder)
        self.case = load_case(self.folder, verify_digests=False)
        self._mri = None
        self._labels = None
        self._label_map = None
        self._ground_truth = None
        self._sweeps: dict[int, object] = {}

    # -- files --------------------------------------------------------------------------
    def attachment_path(self, role: str) -> Path | None:
        """Path of the first attachment of ``role`` (``"label_map"``, ``"ground_truth"``...) or None."""
        found = next((a for a in self.case.attachments if a.role == role), None)
        return None if found is None else self.folder / found.path

    @property
    def mri(self):
        """The planning MRI as a :class:`workbench.io.volume.LoadedVolume` (LPS mm), loaded once."""
        if self._mri is None:
            if self.case.mri is None:
                raise WidgetError("the case has no MRI", self.folder / "case.json")
            from workbench.io.volume import load_volume

            self._mri = load_volume(self.folder / self.case.mri.path)
        return self._mri

    @property
    def labels(self):
        """The label map (LoadedVolume) or None when the case has none."""
        if self._labels is None:
            path = self.attachment_path("label_map")
            if path is None:
                return None
            from workbench.io.volume import load_volume

            self._labels = load_volume(path)
        return self._labels

    @property
    def label_map(self):
        """The label map with its label table (:class:`workbench.anatomy.LabelMap`), or None when the case has none.

        The table is the sidecar ``<file>.labels.json`` (:func:`workbench.case.labels.read_case_label_map`);
        only a synthetic case (with ground truth) may keep one without, in the workbench encoding.
        """
        if self._label_map is None and self.attachment_path("label_map") is not None:
            from workbench.case.labels import read_case_label_map

            self._label_map = read_case_label_map(self.case, self.folder)
        return self._label_map

    def ground_truth(self):
        """The :class:`~workbench.io.ground_truth.GroundTruth` of a synthetic case (read once), or None.

        Raises
        ------
        GroundTruthError
            The case's ground_truth.json cannot be read (the message names the file).
        """
        if self._ground_truth is None:
            path = self.attachment_path("ground_truth")
            if path is None:
                return None
            from workbench.io.ground_truth import read_ground_truth

            self._ground_truth = read_ground_truth(path)
        return self._ground_truth

    def sweep(self, index: int = 0):
        """The ``index``-th tracked sweep as a :class:`workbench.io.sequence.TrackedSequence` (cached)."""
        if index not in self._sweeps:
            if not 0 <= index < len(self.case.sweeps):
                raise WidgetError(f"the case has {len(self.case.sweeps)} sweeps, no sweep {index}", self.folder)
            from workbench.io.sequence import read_sequence

            self._sweeps[index] = read_sequence(self.folder / self.case.sweeps[index].path)
        return self._sweeps[index]

    def save(self, case=None) -> None:
        """Write ``case`` (default the session's) to ``case.json`` atomically and keep it as :attr:`case`.

        Raises
        ------
        CaseBundleError
            Invalid case or unwritable folder; the previous ``case.json`` stays intact.
        """
        from workbench.case import save_case

        self.case = save_case(self.case if case is None else case, self.folder)

    # -- what the case still lacks ------------------------------------------------------
    def readiness(self) -> dict:
        """Per workflow step what the case holds and what to add next (:func:`workbench.case.readiness.case_readiness`)."""
        from workbench.case.readiness import case_readiness

        return case_readiness(self.case, self.folder)

    def missing(self, step: str) -> str | None:
        """One line of guidance for ``step`` (``"landmarks"``, ``"targets"``, ``"entries"``, ``"label_map"``,
        ``"registration"``, ``"sweeps"``...) while it cannot be done yet, else None."""
        readiness = self.readiness()
        if step not in readiness:
            raise WidgetError(f"no step {step!r}; steps: {', '.join(readiness)}")
        return readiness[step]["next"]

    # -- tables -------------------------------------------------------------------------
    def series_table(self) -> list[dict]:
        """One row per image series of the case: role, path, size, spacing (mm), frames.

        Returns
        -------
        list of dict
            Keys ``role``, ``path``, ``description``, ``size``, ``spacing_mm``.
        """
        rows = []
        if self.case.mri is not None:
            mri = self.case.mri
            rows.append(
                {
                    "role": "MRI",
                    "path": mri.path,
                    "description": mri.description,
                    "size": list(mri.size_px) if mri.size_px else None,
                    "spacing_mm": [round(v, 3) for v in mri.spacing_mm] if mri.spacing_mm else None,
                }
            )
        for index, sweep in enumerate(self.case.sweeps):
            rows.append(
                {
                    "role": f"sweep {index}",
                    "path": sweep.path,
                    "description": "tracked ultrasound (PLUS sequence)",
                    "size": None,
                    "spacing_mm": [round(float(v), 3) for v in np.linalg.norm(sweep.image_to_probe.matrix[:3, :2], axis=0)],
                }
            )
        for attachment in self.case.attachments:
            if attachment.role in ("label_map", "mri_dicom"):
                rows.append(
                    {
                        "role": attachment.role,
                        "path": attachment.path,
                        "description": attachment.description,
                        "size": None,
                        "spacing_mm": None,
                    }
                )
        return rows


def landmark_registration(session: CaseSession):
    """Paired-point ``ReferenceToMri`` fit from the case's paired landmarks, targets' predicted TRE
    (the landmark step of :func:`workbench.registration.pipeline.run_registration_pipeline`).

    Returns
    -------
    workbench.registration.result.RegistrationResult
        Method ``"landmarks"``: FRE, per-landmark residuals (mm), predicted TRE at the case's targets.
    """
    from workbench.registration.landmarks import pair_landmarks
    from workbench.registration.pipeline import RegistrationInputs, RegistrationSettings, run_registration_pipeline

    pairs = pair_landmarks(session.case.landmarks)
    targets_mri = {t.name: np.asarray(t.point_lps_mm) for t in session.case.targets}
    inputs = RegistrationInputs(landmarks=pairs, targets_mri=targets_mri or None)
    return run_registration_pipeline(inputs, RegistrationSettings(refinements=()))


class CaseRegistration(NamedTuple):
    """The ``ReferenceToMri`` the notebooks use, and where it comes from.

    Attributes
    ----------
    transform : Transform or None
        ``ReferenceToMri`` (Reference mm to Mri LPS mm), None when the case has none yet.
    fre_mm : float or None
        Its fiducial registration error on the case's landmark pairs, mm, where known.
    source : {"saved", "landmarks", None}
        The case's current saved registration, a fit of its landmark pairs (not yet accepted), or none.
    description : str
        One line for the user (the guidance when there is none).
    """

    transform: object
    fre_mm: float | None
    source: str | None
    description: str


def case_registration(session: CaseSession) -> CaseRegistration:
    """The case's current saved registration, else the fit of its landmark pairs, else guidance.

    Never raises for a case that is not registered yet: :attr:`CaseRegistration.transform` is
    None then, and :attr:`CaseRegistration.description` says what to do ("place 3 landmark pairs
    to register").
    """
    from workbench.errors import RegistrationError
    from workbench.registration.landmarks import MIN_PAIRS, pair_landmarks

    saved = session.case.current_registration
    if saved is not None:
        fre = "" if saved.fre_mm is None else f", FRE {saved.fre_mm:.2f} mm"
        return CaseRegistration(saved.reference_to_mri, saved.fre_mm, "saved",
                                f"registration {saved.registration_id} ({saved.method}) saved in the case{fre}")
    try:
        count = len(pair_landmarks(session.case.landmarks).names)
        if count >= MIN_PAIRS:
            result = landmark_registration(session)
            return CaseRegistration(result.transform, result.fre_mm, "landmarks",
                                    f"landmark fit of {count} pairs (not yet accepted in notebook 03), FRE {result.fre_mm:.2f} mm")
        from workbench.widgets.us_landmarks import pair_guidance

        guidance = pair_guidance(count)
    except RegistrationError as exc:
        guidance = f"no registration: {exc}"
    return CaseRegistration(None, None, None, f"no registration yet: {guidance}")
