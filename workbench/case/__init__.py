"""Case bundles: a folder with ``case.json`` and the volumes and sweeps it references.

``case.json`` follows a versioned JSON Schema (draft 2020-12,
``workbench/schemas/case.schema.json``). Files are referenced by '/'-separated paths
relative to the case folder, each with its SHA-256. The schema forbids unknown keys
everywhere, and :func:`save_case` and :func:`load_case` also refuse any key or text that
names a DICOM identifying attribute, so a bundle never holds patient identifiers.
Older schema versions are migrated on load through :data:`MIGRATIONS`; a newer one is
refused. Layout, fields and rules: ``docs/case-bundle.md``; frames: ``docs/frames.md``.

The package has four modules, one per concern, each importable on its own:

- :mod:`workbench.case.model`: the data classes (:class:`Case`, :class:`Landmark`, ...) and
  their dict form; light imports only (numpy, frames, errors). Registration imports these.
- :mod:`workbench.case.schema`: JSON Schema validation, schema versions and migrations.
- :mod:`workbench.case.identifiers`: the patient-identifier guard, over the list of
  identifying DICOM attributes it shares with the anonymiser (:mod:`workbench.identifiers`).
- :mod:`workbench.case.storage`: the folder on disk: load, save (atomic), add files, digests.

Three more build on them and are imported from their modules: :mod:`workbench.case.create`
makes a bundle from a patient's own MRI and sweeps (``new_case``; it loads SimpleITK),
:mod:`workbench.case.readiness` says what a case still lacks for each step
(``case_readiness``), and :mod:`workbench.case.cli` registers ``workbench new-case``.
"""

from workbench.case.identifiers import IDENTIFYING_DICOM_ATTRIBUTES
from workbench.case.model import (
    ATTACHMENT_ROLES,
    CURRENT_SCHEMA_VERSION,
    Attachment,
    Case,
    FileRef,
    Landmark,
    MriRef,
    SavedRegistration,
    SweepRef,
    Target,
    undo_registration,
    with_registration,
)
from workbench.case.schema import MIGRATIONS, SCHEMA_FILES
from workbench.case.storage import (
    CASE_FILE,
    FILE_KINDS,
    add_file,
    describe_case,
    file_sha256,
    load_case,
    path_sha256,
    save_case,
)

__all__ = [
    "CASE_FILE",
    "CURRENT_SCHEMA_VERSION",
    "FILE_KINDS",
    "IDENTIFYING_DICOM_ATTRIBUTES",
    "MIGRATIONS",
    "SCHEMA_FILES",
    "ATTACHMENT_ROLES",
    "Attachment",
    "Case",
    "FileRef",
    "Landmark",
    "MriRef",
    "SavedRegistration",
    "SweepRef",
    "Target",
    "add_file",
    "describe_case",
    "file_sha256",
    "path_sha256",
    "load_case",
    "save_case",
    "undo_registration",
    "with_registration",
]

