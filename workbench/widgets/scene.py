"""3D fused scene in pyvista, rendered off-screen into an image widget (works offline and in Voila).

What is drawn, all in ``Mri`` (LPS mm): the MRI as three orthogonal slices or the bone surface
(marching cubes on the label map), ultrasound frames as textured planes at their tracked poses
(``image_to_mri = reference_to_mri @ probe_to_reference @ image_to_probe``, with the case's current
registration, ``case.json`` ``current_registration_id``, unless a transform is given; never the
ground truth of a synthetic case), landmarks, targets, entry points, planned paths and the needle.
:class:`SceneBuilder` builds the meshes (no ipywidgets); :class:`Scene3D` shows the rendering with
camera sliders. DOM hook: class ``wb-scene-3d``.

Headless machines: VTK renders through EGL (Debian packages ``libegl1``, ``libgl1-mesa-dri``) with no
X server; ``VTK_DEFAULT_OPENGL_WINDOW`` is set to ``vtkEGLRenderWindow`` when ``$DISPLAY`` is unset.
"""

from __future__ import annotations

import os

import numpy as np

from workbench.widgets.fusion import frame_corners_mri
from workbench.widgets.session import CaseSession, WidgetError

__all__ = ["SceneBuilder", "Scene3D", "render_scene"]

_POINT_COLOURS = {"landmark": "gold", "target": "red", "entry": "deepskyblue"}


def _pyvista():
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    pv.OFF_SCREEN = True
    return pv


class SceneBuilder:
    """Meshes of the fused scene.

    Parameters
    ----------
    session : CaseSession
    reference_to_mri : Transform, optional
        ``ReferenceToMri`` to place the ultrasound frames with instead of the case's current
        registration. Without either, no ultrasound frame is placed.
    """

    def __init__(self, session: CaseSession, reference_to_mri=None):
        self.session = session
        self.given_reference_to_mri = reference_to_mri
        self._bone = {}

    @property
    def reference_to_mri(self):
        """The ``ReferenceToMri`` the frames are placed with: the one given, else the case's current
        registration (read at every call, so an accepted or undone registration shows on the next render), else None."""
        if self.given_reference_to_mri is not None:
            return self.given_reference_to_mri
        saved = self.session.case.current_registration
        return None if saved is None else saved.reference_to_mri

    @reference_to_mri.setter
    def reference_to_mri(self, transform) -> None:
        self.given_reference_to_mri = transform

    def registration_text(self) -> str:
        """What places the ultrasound frames, for the user."""
        if self.given_reference_to_mri is not None:
            return "ultrasound placed with the ReferenceToMri given to the scene"
        saved = self.session.case.current_registration
        if saved is None:
            return "no registration accepted in the case: ultrasound frames are not shown (accept one in notebook 3)"
        fre = "" if saved.fre_mm is None else f", FRE {saved.fre_mm:.2f} mm"
        return f"ultrasound placed with the case's registration {saved.registration_id} ({saved.method}{fre})"

    def bone_surface(self, step: int = 3):
        """Bone surface (pyvista PolyData, LPS mm) by marching cubes on the label map subsampled by ``step`` (cached)."""
        if step not in self._bone:
            self._bone[step] = self._bone_surface(step)
        return self._bone[step]

    def _bone_surface(self, step: int):
        pv = _pyvista()
        label_map = self.session.label_map
        if label_map is None:
            raise WidgetError("no label map in the case: cannot build the bone surface", self.session.folder)
        values_kji = label_map.array[::step, ::step, ::step]
        bone = label_map.bone_mask(values_kji).astype(np.float32)  # bone as the label table names it
        grid = pv.ImageData(dimensions=bone.shape[::-1], spacing=(1.0, 1.0, 1.0))
        grid.point_data["bone"] = bone.ravel(order="C")  # x (i) fastest, as VTK
        surface = grid.contour([0.5], scalars="bone")
        matrix = label_map.mri_voxel_to_mri.matrix @ np.diag([step, step, step, 1.0])
        return surface.transform(matrix, inplace=False)

    def mri_slices(self):
        """Three orthogonal MRI slices through the volume centre (pyvista meshes with ``mri`` scalars)."""
        pv = _pyvista()
        import SimpleITK as sitk

        mri = self.session.mri
        array = sitk.GetArrayViewFromImage(mri.image).astype(np.float32)
        grid = pv.ImageData(dimensions=array.shape[::-1], spacing=(1.0, 1.0, 1.0))
        grid.point_data["mri"] = array.ravel(order="C")
        slices = grid.slice_orthogonal()
        return slices.transform(mri.mri_voxel_to_mri.matrix, inplace=False)

    def us_planes(self, sweep: int = 0, count: int = 5):
        """``count`` frames of a sweep as textured quads at their tracked poses: list of (PolyData, Texture)."""
        pv = _pyvista()
        if self.reference_to_mri is None:
            return []
        from workbench.registration.surface import probe_to_reference_poses

        sequence = self.session.sweep(sweep)
        poses, valid = probe_to_reference_poses(sequence)
        images = sequence.images_mf()
        image_to_probe = self.session.case.sweeps[sweep].image_to_probe.matrix
        chosen = np.flatnonzero(valid)
        chosen = chosen[np.linspace(0, len(chosen) - 1, min(count, len(chosen))).astype(int)]
        height, width = images.shape[1:3]
        planes = []
        for frame in chosen:
            image_to_mri = self.reference_to_mri.matrix @ poses[frame] @ image_to_probe
            corners = frame_corners_mri(image_to_mri, width, height)  # TL, TR, BR, BL
            quad = pv.PolyData(corners, faces=[4, 0, 1, 2, 3])
            quad.active_texture_coordinates = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=float)  # row 0 on top
            planes.append((quad, pv.Texture(np.ascontiguousarray(images[frame]))))
        return planes

    def points(self, points_model=None):
        """Landmarks, targets and entries as dict kind -> (N, 3) LPS mm (Mri landmarks only)."""
        from workbench.widgets.points import PointListModel

        model = points_model or PointListModel(self.session.case, None, autosave=False)
        return {kind: model.points_lps(kind) for kind in ("landmark", "target", "entry")}

    def paths(self):
        """Planned paths (entry, target) LPS mm: the expert plans of a synthetic case, else []."""
        truth = self.session.ground_truth()
        if truth is None:
            return []
        return [(np.asarray(p.entry_lps_mm), np.asarray(p.target_lps_mm), float(p.needle_length_mm)) for p in truth.expert_plans]


def render_scene(builder: SceneBuilder, mri: str = "bone", frames: int = 5, azimuth_deg: float = 30.0,
                 elevation_deg: float = 20.0, zoom: float = 1.3, window_px=(720, 540), trajectories=None) -> np.ndarray:
    """Render the scene off-screen; returns the (H, W, 3) uint8 image.

    Parameters
    ----------
    builder : SceneBuilder
    mri : {"bone", "slices", "none"}
    frames : int
        Ultrasound frames shown (0 for none).
    azimuth_deg, elevation_deg, zoom : float
        Camera relative to a posterior view (the patient prone, seen from behind).
    trajectories : list of (entry (3,), target (3,), needle_length_mm), optional
        Default: :meth:`SceneBuilder.paths`. The needle is drawn from the target back along the path.
    """
    pv = _pyvista()
    plotter = pv.Plotter(off_screen=True, window_size=tuple(window_px))
    plotter.set_background("#1e1e24")
    if mri == "bone":
        plotter.add_mesh(builder.bone_surface(), color="ivory", smooth_shading=True, opacity=1.0)
    elif mri == "slices":
        plotter.add_mesh(builder.mri_slices(), scalars="mri", cmap="gray", show_scalar_bar=False)
    for quad, texture in builder.us_planes(count=frames) if frames else []:
        plotter.add_mesh(quad, texture=texture, opacity=0.9)
    for kind, points in builder.points().items():
        if len(points):
            plotter.add_points(points, color=_POINT_COLOURS[kind], point_size=9 if kind != "landmark" else 6,
                               render_points_as_spheres=True)
    for entry, target, needle_mm in builder.paths() if trajectories is None else trajectories:
        plotter.add_mesh(pv.Line(entry, target), color="lime", line_width=3)
        direction = (target - entry) / np.linalg.norm(target - entry)
        hub = target - direction * needle_mm
        plotter.add_mesh(pv.Cylinder(center=(hub + target) / 2, direction=direction, radius=0.6, height=needle_mm),
                         color="silver")
    plotter.view_vector((0.0, 1.0, 0.0), viewup=(0.0, 0.0, 1.0))  # from posterior (+P), head up
    plotter.camera.azimuth = azimuth_deg
    plotter.camera.elevation = elevation_deg
    plotter.reset_camera()
    plotter.camera.zoom(zoom)
    image = plotter.screenshot(return_img=True)
    plotter.close()
    return np.asarray(image[..., :3], dtype=np.uint8)


class Scene3D:
    """The 3D scene as an image, with MRI mode, frame count and camera sliders (re-rendered off-screen).

    Parameters
    ----------
    session : CaseSession
    reference_to_mri : Transform, optional
        Default: the case's current registration (see :class:`SceneBuilder`).
    mri : {"bone", "slices", "none"}

    Attributes
    ----------
    widget : ipywidgets.VBox (class ``wb-scene-3d``)
    last_image : (H, W, 3) uint8 array
    """

    def __init__(self, session: CaseSession, reference_to_mri=None, mri: str = "bone", frames: int = 5):
        import ipywidgets as W

        self.builder = SceneBuilder(session, reference_to_mri)
        self.mri = W.ToggleButtons(options=["bone", "slices", "none"], value=mri, description="MRI")
        self.frames = W.IntSlider(value=frames, min=0, max=20, description="US frames", continuous_update=False)
        self.azimuth = W.IntSlider(value=30, min=-180, max=180, step=5, description="azimuth", continuous_update=False)
        self.elevation = W.IntSlider(value=20, min=-80, max=80, step=5, description="elevation", continuous_update=False)
        self.zoom = W.FloatSlider(value=1.3, min=0.5, max=4.0, step=0.1, description="zoom", continuous_update=False)
        self.image = W.Image(format="png", layout=W.Layout(width="720px"))
        self.image.add_class("wb-scene-image")
        self.info = W.HTML()
        for control in (self.mri, self.frames, self.azimuth, self.elevation, self.zoom):
            control.observe(lambda _c: self.render(), names="value")
        self.widget = W.VBox([self.mri, W.HBox([self.frames, self.zoom]), W.HBox([self.azimuth, self.elevation]),
                              self.image, self.info])
        self.widget.add_class("wb-scene-3d")
        self.last_image = None
        self.render()

    def render(self) -> np.ndarray:
        """Re-render with the current settings; returns the image."""
        import html
        import time

        from workbench.widgets.sweep import png_bytes

        start = time.perf_counter()
        try:
            self.last_image = render_scene(self.builder, self.mri.value, self.frames.value, self.azimuth.value,
                                           self.elevation.value, self.zoom.value)
        except Exception as exc:  # noqa: BLE001 - a clear message instead of a blank box
            self.info.value = f"<span style='color:#c00'>3D rendering failed: {exc}</span>"
            return self.last_image
        self.image.value = png_bytes(self.last_image)
        self.info.value = html.escape(f"rendered off-screen in {time.perf_counter() - start:.2f} s; {self.builder.registration_text()}")
        return self.last_image
