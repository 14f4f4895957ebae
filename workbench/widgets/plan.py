"""Plan panel: target and entry, needle from the catalogue, live depth/angles/safety, safer entries, exports.

:class:`PlanModel` (no UI) builds a :class:`workbench.planning.model.Trajectory` from the case's
points and evaluates it with :mod:`workbench.planning` (geometry, safety against the label map,
entry suggestions, every export). :class:`PlanPanel` is the ipywidgets controller. All positions
LPS mm (``Mri``). The registration is the case's current one (``case.json``
``current_registration_id``), so a plan's ``registration`` names it with its FRE and TRE.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import numpy as np

from workbench.widgets.points import PointListModel
from workbench.widgets.session import CaseSession, WidgetError

__all__ = ["PlanModel", "PlanPanel", "EXPERT_PREFIX"]

#: Entry choices taken from a synthetic case's expert plans start with this.
EXPERT_PREFIX = "expert: "


def _trajectory_name(target: str) -> str:
    """A trajectory's name from its target's (``"L4 left exiting nerve root ..."`` -> ``"L4 left"``), 60 characters at most."""
    return (re.sub(r"\s+exiting nerve root.*$", "", target) or target)[:60]


class PlanModel:
    """One trajectory at a time, from the case's targets and entry points.

    Parameters
    ----------
    session : CaseSession
    reference_to_mri : Transform, optional
        ``ReferenceToMri`` (angles in Reference, the exported transform) to use instead of the
        case's current registration; plans then record it as not saved in the case.
    points : PointListModel, optional
        Share an editor's list (default: a read-only view of the case).
    expert_entries : bool
        Offer a synthetic case's expert entries as choices (default). A teaching-library case
        hides them: the trainee's plan is scored against the expert's, shown after submitting.
    """

    def __init__(self, session: CaseSession, reference_to_mri=None, points: PointListModel | None = None,
                 expert_entries: bool = True):
        self.session = session
        self.given_reference_to_mri = reference_to_mri
        self.points = points or PointListModel(session.case, None, autosave=False)
        self.label_map = session.label_map
        self._body = None
        truth = session.ground_truth()
        self._expert = {} if truth is None or not expert_entries else {plan.target: plan for plan in truth.expert_plans}

    @property
    def registration(self):
        """The case's current :class:`~workbench.case.model.SavedRegistration` (read at every call), or None."""
        return self.session.case.current_registration

    @property
    def reference_to_mri(self):
        """``ReferenceToMri`` in use: the one given, else the case's current registration's, else None."""
        if self.given_reference_to_mri is not None:
            return self.given_reference_to_mri
        saved = self.registration
        return None if saved is None else saved.reference_to_mri

    def registration_summary(self, trajectories=()):
        """The plan's :class:`~workbench.planning.model.RegistrationSummary`, or None without a registration.

        From the case's current registration: its id, method, FRE and the largest predicted TRE at the
        targets of ``trajectories`` (:func:`workbench.planning.model.registration_summary`). A transform
        given to the model is recorded as such, without errors.
        """
        from workbench.planning.model import RegistrationSummary, registration_summary

        saved = self.registration
        if self.given_reference_to_mri is not None and not (
            saved is not None and np.allclose(saved.reference_to_mri.matrix, self.given_reference_to_mri.matrix, atol=1e-9)
        ):  # the case's own registration handed over (notebook 04) keeps its FRE, TRE and quality verdict
            return RegistrationSummary("given to the plan panel (not saved in the case)", self.given_reference_to_mri)
        if saved is None:
            return None
        names = {t.name for t in trajectories}
        targets = [t.name for t in self.session.case.targets if t.name in names or _trajectory_name(t.name) in names]
        return registration_summary(saved, targets)

    def targets(self) -> list[str]:
        """Names of the target points."""
        return self.points.names("target")

    def entries(self, target: str) -> list[str]:
        """Entry choices for ``target``: entry points of the case, then the expert entry if any."""
        out = list(self.points.names("entry"))
        if target in self._expert:
            out.append(EXPERT_PREFIX + target)
        return out

    def _entry_lps(self, target: str, entry: str | None) -> np.ndarray:
        if entry and entry.startswith(EXPERT_PREFIX):
            return np.asarray(self._expert[entry[len(EXPERT_PREFIX):]].entry_lps_mm, dtype=float)
        if entry:
            return np.asarray(self.points.get(entry).point_lps, dtype=float)
        # no entry chosen: straight posterior to the skin (label map), else 60 mm posterior
        target_lps = np.asarray(self.points.get(target).point_lps, dtype=float)
        provisional = target_lps + np.array([0.0, 60.0, 0.0])
        if self.label_map is not None:
            suggestions = self.suggest(self.trajectory(target, provisional), ring_radii_mm=(0.0,), directions=1)
            if suggestions:
                return np.asarray(suggestions[0].trajectory.entry_lps_mm)
        return provisional

    def trajectory(self, target: str, entry=None, needle: str | None = None):
        """A Trajectory from target ``target`` to ``entry`` (a name, an (3,) LPS mm point, or None).

        The needle is the catalogue entry ``needle`` (label like ``"90 mm 22G"``), else the
        shortest one that reaches with :data:`workbench.equipment.NEEDLE_MARGIN_MM` to spare.
        """
        from workbench.equipment import NEEDLE_CATALOGUE, NEEDLE_MARGIN_MM, shortest_needle
        from workbench.planning.model import Trajectory
        from workbench.planning.safety import skin_normal_at

        target_point = self.points.get(target)
        entry_lps = np.asarray(entry, dtype=float) if entry is not None and not isinstance(entry, str) else self._entry_lps(target, entry)
        depth_mm = float(np.linalg.norm(entry_lps - np.asarray(target_point.point_lps)))
        if needle is None:
            chosen = shortest_needle(depth_mm, NEEDLE_MARGIN_MM)
        elif needle in NEEDLE_CATALOGUE:
            chosen = NEEDLE_CATALOGUE[needle]
        else:
            raise WidgetError(f"needle {needle!r} is not in the catalogue ({', '.join(NEEDLE_CATALOGUE)})")
        normal = skin_normal_at(self.label_map, entry_lps) if self.label_map is not None else None
        return Trajectory(name=_trajectory_name(target), structure=target_point.detail or target, target_lps_mm=target_point.point_lps,
                          entry_lps_mm=entry_lps, needle=chosen, approach="paramedian", skin_normal_lps=normal)

    @property
    def body(self):
        """The body segmented from the planning MRI (:class:`~workbench.planning.mri_checks.BodyMask`), built once.

        The same mask the export uses, so the live status and the exported one agree.
        """
        if self._body is None:
            from workbench.planning.mri_checks import BodyMask

            self._body = BodyMask.from_volume(self.session.mri)
        return self._body

    def evaluate(self, trajectory) -> dict:
        """Depth, remaining needle, angles (patient planes, skin, Reference) and the safety report.

        Returns
        -------
        dict
            ``depth_mm``, ``remaining_needle_mm``, ``angle_to_axial_deg``, ``angle_to_sagittal_deg``,
            ``angle_to_coronal_deg``, ``angle_to_skin_normal_deg``, ``status`` (ok < incomplete <
            warning < blocked), ``reasons``, ``structures_checked`` (names),
            ``structures_not_checked`` (name -> why), ``min_clearance_mm``, ``bone_crossed``,
            ``needle`` (label).
        """
        from workbench.planning.model import derive_geometry
        from workbench.planning.safety import check_trajectory

        geometry = derive_geometry(trajectory, self.reference_to_mri)
        safety = check_trajectory(trajectory, self.label_map, body=self.body)
        return {
            "depth_mm": geometry.insertion_depth_mm,
            "remaining_needle_mm": geometry.remaining_needle_mm,
            "angle_to_axial_deg": geometry.angle_to_axial_deg,
            "angle_to_sagittal_deg": geometry.angle_to_sagittal_deg,
            "angle_to_coronal_deg": geometry.angle_to_coronal_deg,
            "angle_to_skin_normal_deg": geometry.angle_to_skin_normal_deg,
            "status": safety.status,
            "reasons": list(safety.reasons),
            "structures_checked": list(safety.checked_structures),
            "structures_not_checked": {name: item.detail for name, item in safety.unchecked_structures.items()},
            "min_clearance_mm": safety.min_clearance_mm,
            "bone_crossed": safety.bone_crossed,
            "needle": trajectory.needle.label,
            "safety": safety,
        }

    def suggest(self, trajectory, ring_radii_mm=None, directions: int = 12):
        """Safer entries for the same target, safest first (``workbench.planning.safety.suggest_entries``).

        ``ring_radii_mm`` defaults to :data:`workbench.planning.safety.SAFER_ENTRY_RING_RADII_MM`.
        """
        from workbench.planning.safety import SAFER_ENTRY_RING_RADII_MM, suggest_entries

        if self.label_map is None:
            raise WidgetError("suggesting entries needs the case's label map", self.session.folder)
        rings = SAFER_ENTRY_RING_RADII_MM if ring_radii_mm is None else tuple(ring_radii_mm)
        return suggest_entries(trajectory, self.label_map, ring_radii_mm=rings, directions=directions, body=self.body)

    def plan(self, trajectory, plan_id: str | None = None, author: str = ""):
        """The one-trajectory :class:`~workbench.planning.model.Plan` that :meth:`export` writes."""
        from workbench.planning.model import Plan, Provenance

        plan_id = plan_id or re.sub(r"[^A-Za-z0-9_-]+", "-", f"{self.session.case.case_id}-{trajectory.name}").strip("-")[:64]
        registration = self.registration_summary((trajectory,))
        return Plan(plan_id, (trajectory,), Provenance(mri_digest=self.session.mri.source_digest, author=author),
                    registration, f"Plan of {self.session.case.title or self.session.case.case_id}")

    def export(self, trajectory, out_dir, plan_id: str | None = None, author: str = "") -> list[Path]:
        """Write plan.json, Slicer markups, CSV, HTML report and (with a registration) .tfm/.h5.

        The same writer as ``workbench plan`` (:func:`workbench.planning.export.write_plan_bundle`,
        default safety thresholds, recorded in plan.json).

        Returns
        -------
        list of Path
            The files written, in ``out_dir/<plan_id>/``.
        """
        from workbench.planning.export import write_plan_bundle

        plan = self.plan(trajectory, plan_id, author)
        bundle = write_plan_bundle(plan, Path(out_dir) / plan.plan_id, self.label_map, self.session.mri, body=self.body)
        return list(bundle.files)


def export_href(path: Path) -> str:
    """The link to an exported file from the notebook page that wrote it.

    JupyterLab opens a path relative to the notebook. A Voila page (the teaching app) serves
    files only through ``voila/files/`` (the allow-list of :mod:`workbench.teach`), so there the
    link goes through it: a plain relative link answered 403.
    """
    from workbench.widgets.session import running_in_voila

    try:
        relative = os.path.relpath(path, Path.cwd())
    except ValueError:
        return str(path)
    if running_in_voila() and not relative.startswith(".."):
        return "../files/" + Path(relative).as_posix()  # from voila/render/<notebook> to voila/files/<path>
    return relative


class PlanPanel:
    """Choose target, entry and needle; live numbers and safety; safer entries; export with links.

    Parameters
    ----------
    model : PlanModel
    out_dir : path
        Where exports go (default ``exports/`` in the working folder, i.e. beside the notebook).

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-plan-panel``)
    """

    def __init__(self, model: PlanModel, out_dir="exports"):
        import ipywidgets as W

        from workbench.equipment import NEEDLE_CATALOGUE

        self.model = model
        self.out_dir = Path(out_dir)
        targets = model.targets()
        if not targets:
            raise WidgetError("the case has no targets: place some in notebook 2", model.session.folder)
        self.target = W.Dropdown(options=targets, description="target", layout=W.Layout(width="520px"))
        self.entry = W.Dropdown(options=[], description="entry", layout=W.Layout(width="520px"))
        self.needle = W.Dropdown(options=["(shortest that reaches)"] + list(NEEDLE_CATALOGUE), description="needle")
        self.numbers = W.HTML()
        self.suggest_button = W.Button(description="Suggest safer entries", icon="life-ring")
        self.suggestions = W.Dropdown(options=[], description="use", layout=W.Layout(width="520px"))
        self.export_button = W.Button(description="Export all formats", icon="download", button_style="primary")
        self.links = W.HTML()
        self._custom_entry = None
        self._suggested = []
        self._listeners = []
        from workbench.widgets._ui import full_label

        full_label(self.suggest_button, self.export_button)
        self.target.observe(lambda _c: self._on_target(), names="value")
        self.entry.observe(lambda _c: self._entry_changed(), names="value")
        self.needle.observe(lambda _c: self.update(), names="value")
        self.suggest_button.on_click(lambda _b: self.suggest())
        self.suggestions.observe(self._on_suggestion, names="value")
        self.export_button.on_click(lambda _b: self.export())
        self.widget = W.VBox([self.target, self.entry, self.needle, self.numbers,
                              W.HBox([self.suggest_button, self.suggestions]), self.export_button, self.links])
        self.widget.add_class("wb-plan-panel")
        self._on_target()

    def current(self):
        """The trajectory shown."""
        needle = None if self.needle.value.startswith("(") else self.needle.value
        entry = self._custom_entry if self._custom_entry is not None else (self.entry.value or None)
        return self.model.trajectory(self.target.value, entry, needle)

    def on_update(self, callback) -> None:
        """Call ``callback()`` after every :meth:`update` that computed the numbers (the path view redraws)."""
        self._listeners.append(callback)

    def _forget_suggestions(self, keep_list: bool = False) -> None:
        """Drop the taken suggestion (and, unless ``keep_list``, the list) and the links of an earlier export:
        they belong to the previous target or entry."""
        self._custom_entry = None
        if keep_list and self._suggested:
            self.suggestions.value = -1
        else:
            self._suggested = []
            self.suggestions.options = []
        self.links.value = ""

    def _on_target(self) -> None:
        self._forget_suggestions()
        options = self.model.entries(self.target.value)
        self.entry.options = options or [("(straight posterior to the skin)", "")]
        if options:
            self.entry.value = options[-1]
        self.update()

    def _entry_changed(self) -> None:
        self._forget_suggestions(keep_list=True)
        self.update()

    def update(self) -> dict | None:
        """Recompute and show the numbers; returns them."""
        try:
            values = self.model.evaluate(self.current())
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.numbers.value = f"<span style='color:#c00'>{html.escape(str(exc))}</span>"
            return None
        colour = {"ok": "#1a7f37", "incomplete": "#5a3d99", "warning": "#b58900", "blocked": "#c00"}[values["status"]]
        skin = values["angle_to_skin_normal_deg"]
        clearance = values["min_clearance_mm"]
        rows = [
            ("needle", values["needle"]),
            ("depth", f"{values['depth_mm']:.1f} mm"),
            ("needle left outside", f"{values['remaining_needle_mm']:.1f} mm"),
            ("angle to axial / sagittal / coronal",
             f"{values['angle_to_axial_deg']:.1f}° / {values['angle_to_sagittal_deg']:.1f}° / {values['angle_to_coronal_deg']:.1f}°"),
            ("angle to skin normal", "n/a" if skin is None else f"{skin:.1f}°"),
            ("smallest clearance", "none near" if clearance is None else f"{clearance:.1f} mm"),
            ("safety", f"<b style='color:{colour}'>{values['status'].upper()}</b> " + html.escape("; ".join(values["reasons"]))),
            ("structures checked", ", ".join(values["structures_checked"]) or "none"),
        ]
        missing = values["structures_not_checked"]
        if missing:  # never hidden: what was not checked is why the status is not "ok"
            rows.append(("NOT checked", "<b style='color:#5a3d99'>" + html.escape(
                "; ".join(f"{name}: {why}" for name, why in missing.items())) + "</b>"))
        raw = ("safety", "NOT checked")
        self.numbers.value = "<table>" + "".join(
            f"<tr><td style='padding-right:12px'>{k}</td><td>{v if k in raw else html.escape(v)}</td></tr>" for k, v in rows
        ) + "</table>"
        self.values = values
        for callback in self._listeners:
            callback()
        return values

    def suggest(self):
        """Fill the suggestion list (safest first); returns the suggestions."""
        self._suggested = self.model.suggest(self.current())[:8]
        self.suggestions.options = [("(keep)", -1)] + [
            (f"#{i + 1}: {s.safety.status}, depth {s.trajectory.insertion_depth_mm:.0f} mm, "
             f"turn {s.angle_change_deg:.0f}°, clearance {s.safety.min_clearance_mm or 0:.1f} mm"
             + (f", not checked: {', '.join(s.safety.unchecked_structures)}" if s.safety.unchecked_structures else ""), i)
            for i, s in enumerate(self._suggested)
        ]
        return self._suggested

    def _on_suggestion(self, change) -> None:
        if change["new"] is not None and change["new"] >= 0:
            self._custom_entry = np.asarray(self._suggested[change["new"]].trajectory.entry_lps_mm)
            self.links.value = ""  # an earlier export was of another entry
            self.update()

    def export(self) -> list[Path]:
        """Write every format; shows links. Returns the files."""
        files = self.model.export(self.current(), self.out_dir)
        items = []
        for path in files:
            href = export_href(path)
            items.append(f"<li><a href='{html.escape(href)}' target='_blank'>{html.escape(path.name)}</a> "
                         f"<small>{path.stat().st_size} bytes</small></li>")
        self.links.value = f"<p>Written to {html.escape(str(files[0].parent))}:</p><ul>{''.join(items)}</ul>"
        return files
