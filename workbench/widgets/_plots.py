"""Static PNG plots for notebooks and the Voila app: matplotlib (Agg) drawn to an ``ipywidgets.Image``.

Live plots that nobody clicks on (a registration's metric per iteration, a tuning trace) do not
need an interactive ipympl canvas: an ipympl canvas created in one cell and shown inside a box can
come up as an 8 x 6 px "broken state" image in JupyterLab and Voila. A :class:`PngPlot` draws its
figure with matplotlib's Agg renderer and sends the PNG bytes as the value of an
``ipywidgets.Image`` of a fixed CSS size, so it renders wherever widgets render and updates live
(also while the kernel is busy: every value change is a comm message sent at once).

ipywidgets and matplotlib are imported when a plot is built.
"""

from __future__ import annotations

import io
import struct

__all__ = ["PngPlot", "figure_png", "png_size"]


def figure_png(figure, dpi: float | None = None) -> bytes:
    """PNG bytes of a matplotlib ``figure`` drawn with the Agg renderer (whatever its canvas).

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    dpi : float, optional
        Default the figure's own dpi (so the PNG is ``figsize * dpi`` pixels).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    canvas.print_png(buffer) if dpi is None else figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width_px, height_px) from a PNG's IHDR chunk.

    Raises
    ------
    ValueError
        ``png`` is not a PNG.
    """
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


class PngPlot:
    """A matplotlib figure shown as a PNG ``ipywidgets.Image``; call :meth:`refresh` after drawing.

    Parameters
    ----------
    width_px, height_px : int
        Size of the image, CSS pixels (the PNG has exactly this many pixels at ``dpi``).
    dpi : int
        Figure dpi (text sizes in points scale with it).
    css_class : str, optional
        Class added to the image widget (a DOM hook for the browser tests).

    Attributes
    ----------
    figure : matplotlib.figure.Figure
        Agg-backed; draw on it (``plot.figure.add_axes``...).
    widget : ipywidgets.Image
        Fixed width and height, so the plot never collapses to a few pixels.
    """

    def __init__(self, width_px: int = 560, height_px: int = 300, dpi: int = 100, css_class: str | None = None):
        import ipywidgets as W
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.width_px, self.height_px = int(width_px), int(height_px)
        self.figure = Figure(figsize=(self.width_px / dpi, self.height_px / dpi), dpi=dpi, facecolor="white")
        FigureCanvasAgg(self.figure)
        self.widget = W.Image(format="png", layout=W.Layout(width=f"{self.width_px}px", height=f"{self.height_px}px",
                                                               min_width=f"{self.width_px}px", min_height=f"{self.height_px}px"))
        self.widget.add_class("wb-png-plot")
        if css_class:
            self.widget.add_class(css_class)

    def png(self) -> bytes:
        """The figure as PNG bytes, ``width_px`` x ``height_px``."""
        return figure_png(self.figure)

    def refresh(self) -> bytes:
        """Draw the figure and send the PNG to the browser; returns the bytes."""
        data = self.png()
        self.widget.value = data
        return data
