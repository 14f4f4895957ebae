"""Optional viewers: itkwidgets (extra ``[itk]``) and ipyniivue, used only when they load.

Neither is installed by default: itkwidgets fetches its viewer from the network at run time
(an IPFS gateway) and its lab extension makes JupyterLab load a script from a CDN; the default
viewers (ipympl slices, off-screen pyvista) work offline. Each function returns the optional
viewer when it can be built, else an HTML widget saying why and what to install, never a blank box.
"""

from __future__ import annotations

import html

__all__ = ["itk_viewer", "niivue_viewer"]


def _message(text: str):
    import ipywidgets as W

    box = W.HTML(f"<div style='padding:8px;border:1px solid #b58900;background:#fff8e1'>{html.escape(text)}</div>")
    box.add_class("wb-viewer-unavailable")
    return box


def itk_viewer(volume):
    """An itkwidgets 3D view of ``volume`` (SimpleITK image or LoadedVolume), or a message widget."""
    try:
        import itkwidgets
    except ImportError:
        return _message('itkwidgets is not installed (optional: pip install ".[itk]"; it needs internet access to load '
                        "its viewer). Use the MPR viewer of notebook 1 or the 3D scene of notebook 5 instead.")
    image = getattr(volume, "image", volume)
    try:
        return itkwidgets.view(image)
    except Exception as exc:  # noqa: BLE001 - any failure becomes a clear message
        return _message(f"itkwidgets could not show the volume ({type(exc).__name__}: {exc}).")


def niivue_viewer(path):
    """An ipyniivue view of a NIfTI/NRRD file (LPS world), or a message widget."""
    try:
        from ipyniivue import NiiVue
    except ImportError:
        return _message("ipyniivue is not installed (optional: pip install ipyniivue).")
    try:
        viewer = NiiVue()
        viewer.load_volumes([{"path": str(path)}])
        return viewer
    except Exception as exc:  # noqa: BLE001
        return _message(f"ipyniivue could not show {path} ({type(exc).__name__}: {exc}).")
