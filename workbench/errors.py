"""The project's own error types.

Every error a user can cause with bad input (a corrupt file, a malformed header,
a NaN pose) is raised as a subclass of :class:`WorkbenchError`, whose message
names the file and the problem in one line. Notebooks and the CLI catch
``WorkbenchError`` and show that line; anything else is a bug in workbench.
"""

from __future__ import annotations

import os


class WorkbenchError(Exception):
    """Base class of every error workbench raises on bad input.

    Parameters
    ----------
    message : str
        What is wrong, in one line, without the path (it is prefixed).
    path : str or os.PathLike, optional
        The file or folder the problem is in.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class FrameError(WorkbenchError):
    """Transforms whose frames do not chain, unknown frames, bad matrices."""


class SequenceFileError(WorkbenchError):
    """A PLUS sequence file (.igs.mha, .seq.mha, .mhd, .igs.nrrd, ...) is malformed."""


class DeviceSetError(WorkbenchError):
    """A PLUS device-set XML is malformed or lacks what is asked of it."""


class DicomError(WorkbenchError):
    """A DICOM file or folder cannot be loaded as asked."""


class VolumeError(WorkbenchError):
    """A volume file (NIfTI, NRRD, MHA/MHD) cannot be read or written."""


class CaseBundleError(WorkbenchError):
    """A case folder or its case.json is malformed, unsafe or of a newer version."""


class ReconstructionError(WorkbenchError):
    """A tracked sweep cannot be reconstructed into a volume as asked."""


class PhantomError(WorkbenchError):
    """Parameters of the synthetic phantom, MRI, ultrasound simulation or sweeps are invalid."""


class RegistrationError(WorkbenchError):
    """Registration inputs cannot give a transform: too few or collinear landmarks, bad weights, NaN points."""


class PlanError(WorkbenchError):
    """A puncture plan (plan.json, imported markups, an exported transform) is malformed or unsafe to write."""


class OutcomesError(WorkbenchError):
    """A procedure log or an outcome analysis request is malformed (bad column, out-of-range value, too few cases)."""
