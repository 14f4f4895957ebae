"""What a case holds and what it still lacks for each step of the workflow.

:func:`case_readiness` answers, from ``case.json`` alone, the question a new user has after
``workbench new-case``: which step can I do now, and what must I add first? ``workbench info
CASE_DIR`` prints it under ``readiness``; the notebooks use it to show guidance ("place 3
landmark pairs to register") instead of failing.
"""

from __future__ import annotations

from pathlib import Path

from workbench.case.model import MIN_LANDMARK_PAIRS, Case

__all__ = ["ENTRY_STRUCTURE", "MIN_LANDMARK_PAIRS", "case_readiness", "landmark_pairs"]

#: ``Target.structure`` that marks an entry point (skin puncture site) rather than a target.
ENTRY_STRUCTURE = "entry point"


def landmark_pairs(case: Case) -> list[str]:
    """Pair labels present in both the ``Mri`` and the ``Reference`` frame, in Mri order.

    The rule of :func:`workbench.registration.landmarks.pair_landmarks`: landmarks pair by their
    ``pair`` label only, so readiness never counts a pair the landmark fit would not use.
    """
    reference = {lm.pair for lm in case.landmarks if lm.frame == "Reference" and lm.pair is not None}
    return [lm.pair for lm in case.landmarks if lm.frame == "Mri" and lm.pair in reference]


def case_readiness(case: Case, folder: str | Path | None = None) -> dict:
    """Per step: what the case holds, whether the step can be done, and what to add next.

    Parameters
    ----------
    case : Case
    folder : str or Path, optional
        The case folder, named in the plan command it suggests; nothing is read from it.

    Returns
    -------
    dict
        JSON-ready, one entry per step: ``mri``, ``sweeps``, ``landmarks`` (``mri``,
        ``reference``, ``pairs`` counts), ``registration`` (``saved`` count; ``current`` id,
        ``method`` and ``fre_mm`` of the registration in use; ready also with a bare
        ``transforms.ReferenceToMri``), ``targets``, ``entries``, ``label_map``, ``plans``.
        Each has ``ready`` (bool) and ``next`` (what to do, or None when the step is complete).
    """
    mri_count = sum(lm.frame == "Mri" for lm in case.landmarks)
    reference_count = sum(lm.frame == "Reference" for lm in case.landmarks)
    pairs = len(landmark_pairs(case))
    targets = [t for t in case.targets if t.structure != ENTRY_STRUCTURE]
    entries = [t for t in case.targets if t.structure == ENTRY_STRUCTURE]
    roles = [a.role for a in case.attachments]
    current = case.current_registration
    registered = current is not None or "ReferenceToMri" in case.transforms
    where = str(folder) if folder is not None else "CASE_DIR"

    def step(ready: bool, next_step: str | None, **have) -> dict:
        return {**have, "ready": ready, "next": None if ready else next_step}

    return {
        "mri": step(case.mri is not None, "add the MRI: make the case with `workbench new-case --mri`",
                    present=case.mri is not None),
        "sweeps": step(bool(case.sweeps), "add a tracked ultrasound sweep (--sweep with --device-set)",
                       count=len(case.sweeps)),
        "landmarks": step(
            pairs >= MIN_LANDMARK_PAIRS,
            f"place {MIN_LANDMARK_PAIRS} landmark pairs to register ({MIN_LANDMARK_PAIRS - pairs} more: the same "
            "named point on the MRI and on the ultrasound)",
            mri=mri_count, reference=reference_count, pairs=pairs,
        ),
        "registration": step(
            registered,
            "register the MRI to the sweeps (notebook 03) once 3 landmark pairs are placed"
            if pairs >= MIN_LANDMARK_PAIRS else f"place {MIN_LANDMARK_PAIRS} landmark pairs to register",
            saved=len(case.registrations),
            current=None if current is None else current.registration_id,
            method=None if current is None else current.method,
            fre_mm=None if current is None else current.fre_mm,
        ),
        "targets": step(bool(targets), "place at least one target on the MRI (notebook 02)", count=len(targets)),
        "entries": step(bool(entries), "place an entry point on the skin for each target (notebook 02)",
                        count=len(entries)),
        "label_map": step("label_map" in roles,
                          "optional: attach a label map for the safety checks against nerves and vessels",
                          present="label_map" in roles),
        "plans": step("plan" in roles, f"plan and export: `workbench plan {where} --out OUT_DIR` or notebook 04",
                      count=roles.count("plan")),
    }
