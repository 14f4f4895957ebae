"""The patient-identifier guard of case bundles.

:func:`save_case` and :func:`load_case` (:mod:`workbench.case.storage`) refuse a
``case.json`` whose keys or text name a DICOM identifying attribute, so a bundle never holds
patient identifiers. The attributes are :data:`workbench.identifiers.IDENTIFYING_DICOM_ATTRIBUTES`,
the very list the anonymiser (:mod:`workbench.anonymize`) removes from DICOM files.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbench.case.schema import json_nodes, json_path
from workbench.errors import CaseBundleError
from workbench.identifiers import IDENTIFYING_DICOM_ATTRIBUTES

__all__ = ["IDENTIFYING_DICOM_ATTRIBUTES", "check_no_identifiers", "identifying_attribute"]

_IDENTIFYING_BY_NORMALIZED = {keyword.lower(): keyword for keyword in IDENTIFYING_DICOM_ATTRIBUTES}
_IDENTIFYING_RE = re.compile("|".join(sorted(_IDENTIFYING_BY_NORMALIZED, key=len, reverse=True)))
_IDENTIFYING_BY_TAG = {tag: keyword for keyword, tag in IDENTIFYING_DICOM_ATTRIBUTES.items()}
_WORD_RE = re.compile(r"[A-Za-z0-9_-]+")
_TAG_RE = re.compile(r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)")


def identifying_attribute(text: str) -> str | None:
    """The DICOM identifying attribute ``text`` names, if any.

    A keyword counts in any letter case, with ``_`` or ``-`` between its parts and inside
    a longer word (``patient_id``, ``PatientNameToMri``), but not split by spaces
    (``"patient name withheld"`` is plain text). A tag counts as ``(gggg,eeee)``.

    Returns
    -------
    str or None
        The attribute's keyword (a key of ``IDENTIFYING_DICOM_ATTRIBUTES``), or None.
    """
    for word in _WORD_RE.findall(text):
        match = _IDENTIFYING_RE.search(word.replace("_", "").replace("-", "").lower())
        if match:
            return _IDENTIFYING_BY_NORMALIZED[match.group()]
    for group, element in _TAG_RE.findall(text):
        keyword = _IDENTIFYING_BY_TAG.get(f"{group},{element}".upper())
        if keyword:
            return keyword
    return None


def check_no_identifiers(document: dict, case_json: Path | None) -> None:
    """Refuse a document with a key or string value that names a DICOM identifying attribute.

    Raises
    ------
    CaseBundleError
        Naming the JSON path and the attribute.
    """
    for parts, value in json_nodes(document):
        if parts and isinstance(parts[-1], str) and (keyword := identifying_attribute(parts[-1])):
            raise CaseBundleError(
                f"{json_path(parts)}: key names DICOM identifying attribute {keyword}; "
                "case bundles hold no patient identifiers",
                case_json,
            )
        if isinstance(value, str) and (keyword := identifying_attribute(value)):
            raise CaseBundleError(
                f"{json_path(parts)} mentions DICOM identifying attribute {keyword}; "
                "case bundles hold no patient identifiers",
                case_json,
            )
