"""The DICOM attributes that identify a patient, a visit or a site: one list for the whole package.

:data:`IDENTIFYING_DICOM_ATTRIBUTES` is read by both sides of the privacy rule:

- the anonymiser (:mod:`workbench.anonymize`) removes, empties or replaces every one of them
  in the DICOM files it writes;
- the case-bundle guard (:mod:`workbench.case.identifiers`) refuses any ``case.json`` key or
  text that names one of them, by keyword or by tag.

Adding an attribute here therefore makes the anonymiser drop it and the guard refuse it.
This module imports nothing from workbench (nor pydicom) so that any layer may use it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = ["IDENTIFYING_DICOM_ATTRIBUTES"]

#: DICOM attributes that identify a patient, a visit or a site (PS3.15 basic profile subset):
#: keyword -> tag as ``"gggg,eeee"`` (uppercase hex). Read-only.
IDENTIFYING_DICOM_ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {
        "PatientName": "0010,0010",
        "PatientID": "0010,0020",
        "IssuerOfPatientID": "0010,0021",
        "PatientBirthDate": "0010,0030",
        "PatientBirthTime": "0010,0032",
        "PatientSex": "0010,0040",
        "OtherPatientIDs": "0010,1000",
        "OtherPatientNames": "0010,1001",
        "PatientBirthName": "0010,1005",
        "PatientAge": "0010,1010",
        "PatientAddress": "0010,1040",
        "PatientMotherBirthName": "0010,1060",
        "MedicalRecordLocator": "0010,1090",
        "PatientTelephoneNumbers": "0010,2154",
        "InstitutionName": "0008,0080",
        "InstitutionAddress": "0008,0081",
        "InstitutionalDepartmentName": "0008,1040",
        "ReferringPhysicianName": "0008,0090",
        "PhysiciansOfRecord": "0008,1048",
        "PerformingPhysicianName": "0008,1050",
        "NameOfPhysiciansReadingStudy": "0008,1060",
        "OperatorsName": "0008,1070",
        "AccessionNumber": "0008,0050",
        "StationName": "0008,1010",
        "DeviceSerialNumber": "0018,1000",
        "StudyID": "0020,0010",
        "StudyDate": "0008,0020",
        "StudyTime": "0008,0030",
        "StudyInstanceUID": "0020,000D",
        "SeriesInstanceUID": "0020,000E",
        "SOPInstanceUID": "0008,0018",
    }
)
