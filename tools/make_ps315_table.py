"""Generate ``workbench/data/ps3.15_e1-1.csv``: DICOM PS3.15 Table E.1-1 as data.

Sources (both on PyPI, read from their wheels, never imported):

- ``dicom-anonymizer==2.1.0`` (KitwareMedical), module
  ``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``: every attribute of
  Table E.1-1 of the DICOM standard **2026c** with its Basic Profile action, grouped by action
  (``D_TAGS``, ``Z_TAGS``, ``X_TAGS``, ``U_TAGS``, ``Z_D_TAGS``, ``X_Z_TAGS``, ``X_D_TAGS``,
  ``X_Z_D_TAGS``, ``X_Z_U_STAR_TAGS``), the attribute name in a comment. This gives the
  rows and the ``basic_profile`` column.
- ``dicom-standard==0.1.0`` (Innolitics), ``standard/confidentiality_profile_attributes.json``:
  Table E.1-1 of an earlier edition (2020, 433 rows) with every option column. This gives the
  two option columns workbench implements, for the attributes that edition has:
  ``rtnLongModifDatesOpt`` (Retain Longitudinal Temporal Information with Modified Dates
  Option) and ``rtnPatCharsOpt`` (Retain Patient Characteristics Option).

For attributes added to the table after 2020 the option columns are derived by the rule that
edition follows: ``C`` under modified dates for every date, time and date-time attribute (VR DA,
TM, DT) except the patient's birth date and time; the patient-characteristics column is left
empty (the attribute is not retained: the safe side). The script checks the rule against the
2020 column and prints every difference.

The keyword is pydicom's (installed dictionary); for attributes newer than that dictionary it
is made from the name as PS3.6 does (``Name to Use`` -> ``NameToUse``) and the VR guessed from
the name (``...Sequence`` -> SQ, ``...DateTime`` -> DT, else LO): such rows are listed.

Usage::

    pip download --no-deps -d /tmp/ps315 dicom-anonymizer==2.1.0 dicom-standard==0.1.0
    python tools/make_ps315_table.py /tmp/ps315            # writes workbench/data/ps3.15_e1-1.csv
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import sys
import zipfile
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag

STANDARD_VERSION = "2026c"
KITWARE_WHEEL = "dicom_anonymizer-2.1.0-py3-none-any.whl"
KITWARE_MODULE = f"dicomanonymizer/dicom_anonymization_databases/dicomfields_{STANDARD_VERSION}.py"
INNOLITICS_WHEEL = "dicom_standard-0.1.0-py3-none-any.whl"
INNOLITICS_JSON = "dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json"
OUT = Path(__file__).resolve().parent.parent / "workbench" / "data" / "ps3.15_e1-1.csv"

ACTION_OF_LIST = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}  # fmt: skip
DATE_VRS = {"DA", "TM", "DT"}
NOT_LONGITUDINAL = {"PatientBirthDate", "PatientBirthTime"}
COLUMNS = ["tag", "keyword", "vr", "name", "basic_profile", "retain_long_modified_dates", "retain_patient_characteristics"]


def kitware_rows(source: str) -> list[tuple[str, str, str]]:
    """(tag ``GGGG,EEEE`` or a ``XX`` pattern, name, basic action) for every tuple of the action lists."""
    lines = source.splitlines()
    rows = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        action = ACTION_OF_LIST.get(node.targets[0].id)
        if action is None:
            continue
        for element in node.value.elts:
            numbers = [ast.literal_eval(v) for v in element.elts]
            comment = lines[element.end_lineno - 1].split("#", 1)[1].strip()
            if len(numbers) == 2:
                tag = f"{numbers[0]:04X},{numbers[1]:04X}"
            else:  # (group, element, group mask, element mask): a repeating group
                group, elem, group_mask, elem_mask = numbers
                tag = f"{group >> 8:02X}XX," + ("XXXX" if elem_mask == 0 else f"{elem:04X}")
                assert group_mask == 0xFF00, numbers
            rows.append((tag, comment, action))
    return rows


def keyword_from_name(name: str) -> str:
    """PS3.6 keyword of an attribute name: ``Patient's Sex`` -> ``PatientSex``."""
    words = re.sub(r"[^A-Za-z0-9 ]", " ", name.replace("'s ", " ")).split()
    return "".join(word[0].upper() + word[1:] for word in words)


def guessed_vr(name: str) -> str:
    if name.endswith("Sequence"):
        return "SQ"
    if name.endswith("DateTime"):
        return "DT"
    return "LO"


def main(folder: Path) -> int:
    with zipfile.ZipFile(folder / KITWARE_WHEEL) as wheel:
        rows = kitware_rows(wheel.read(KITWARE_MODULE).decode("utf-8"))
    with zipfile.ZipFile(folder / INNOLITICS_WHEEL) as wheel:
        older = {entry["id"].upper(): entry for entry in json.loads(wheel.read(INNOLITICS_JSON))}
    tags = [tag for tag, _, _ in rows]
    assert len(tags) == len(set(tags)), "duplicate tag"
    table, guessed, differences = [], [], []
    for tag, name, action in sorted(rows):
        keyword, vr = "", ""
        if "X" not in tag:
            number = int(tag.replace(",", ""), 16)
            keyword = keyword_for_tag(number)
            vr = dictionary_VR(number).split(" or ")[0] if keyword else ""
        if not keyword and "X" not in tag:
            keyword, vr = keyword_from_name(name), guessed_vr(name)
            guessed.append(f"{tag} {keyword} {vr}")
        rule_dates = "C" if vr in DATE_VRS and keyword not in NOT_LONGITUDINAL else ""
        entry = older.get(tag.replace(",", "")) or older.get(tag.replace(",", "").replace("XXXX", "XXXX"))
        if entry is not None:
            dates = entry.get("rtnLongModifDatesOpt", "")
            characteristics = entry.get("rtnPatCharsOpt", "")
            if dates != rule_dates:
                differences.append(f"{tag} {keyword or name}: 2020 column {dates!r}, rule {rule_dates!r}")
        else:
            dates, characteristics = rule_dates, ""
        table.append([tag, keyword, vr, name, action, dates, characteristics])
    text = io.StringIO()
    text.write(
        f"# DICOM PS3.15 {STANDARD_VERSION} Table E.1-1 Application Level Confidentiality Profile Attributes.\n"
        f"# basic_profile: {KITWARE_WHEEL} ({KITWARE_MODULE}); option columns: {INNOLITICS_WHEEL} "
        "(2020 edition) or, for later rows, C for DA/TM/DT except birth date/time.\n"
        "# Generated by tools/make_ps315_table.py; do not edit by hand.\n"
    )
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(table)
    OUT.write_text(text.getvalue(), encoding="utf-8")
    print(f"wrote {OUT} ({len(table)} attributes)")
    print(f"keyword/VR from the name (not in pydicom's dictionary): {len(guessed)}", *guessed, sep="\n  ")
    print(f"modified-dates rule vs the 2020 column: {len(differences)} differences", *differences, sep="\n  ")
    missing = sorted(set(older) - {t.replace(",", "") for t in tags} - {"GGGGEEEE-WHERE-GGGG-IS-ODD"})
    print(f"2020 rows missing in {STANDARD_VERSION}: {missing}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
