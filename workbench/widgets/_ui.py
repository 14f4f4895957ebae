"""Small helpers shared by the widget controllers (imported only when a widget is built)."""

from __future__ import annotations

import json

import numpy as np

_FIGURE_COUNTER = [1000]
#: zlib level of the PNG frames sent to the browser: 1 encodes ~5x faster than PIL's default 6
#: for a few percent more bytes (localhost), which keeps a 512 x 512 slice update under 50 ms.
PNG_COMPRESS_LEVEL = 1
_CANVAS_CLASS = []


def _fast_canvas_class():
    """ipympl's Canvas with a faster PNG encoding of the frames (same full/diff protocol)."""
    if _CANVAS_CLASS:
        return _CANVAS_CLASS[0]
    from io import BytesIO

    from ipympl.backend_nbagg import Canvas
    from PIL import Image

    class FastCanvas(Canvas):
        def get_diff_image(self):
            if not self._png_is_old:
                return None
            rgba = np.asarray(self.get_renderer().buffer_rgba())
            words = rgba.view(np.uint32).squeeze(2)  # one uint32 per pixel: compare whole pixels at once
            last = self._last_buff
            full = self._force_full or words.shape != last.shape or bool((rgba[:, :, 3] != 255).any())
            self.set_image_mode("full" if full else "diff")
            frame = words if full else np.where(words != last, words, 0)
            self._last_buff = words.copy()
            self._force_full = False
            self._png_is_old = False
            with BytesIO() as png:
                Image.fromarray(frame.view(np.uint8).reshape(*frame.shape, 4)).save(
                    png, format="png", compress_level=PNG_COMPRESS_LEVEL
                )
                return png.getvalue()

    _CANVAS_CLASS.append(FastCanvas)
    return FastCanvas


def new_canvas(width_in: float = 6.0, height_in: float = 6.0, dpi: int = 90):
    """A matplotlib figure drawn by an ipympl canvas widget, whatever the notebook's backend.

    Returns
    -------
    figure : matplotlib.figure.Figure
    canvas : ipympl.backend_nbagg.Canvas
        The widget (header and toolbar hidden, not resizable, so clicks are never pan/zoom).
    """
    from ipympl.backend_nbagg import FigureManager
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    canvas = _fast_canvas_class()(figure)
    _FIGURE_COUNTER[0] += 1
    FigureManager(canvas, _FIGURE_COUNTER[0])
    canvas.header_visible = False
    canvas.toolbar_visible = False
    canvas.resizable = False
    canvas.footer_visible = False
    return figure, canvas


def json_hook(css_class: str, value: dict | None = None):
    """A hidden HTML widget whose text is JSON (a DOM hook for browser tests), with ``css_class``.

    Not displayed (``display: none``): a person never sees it, while a test still reads it
    (``element.innerText`` of an element that is not rendered is its text content, and a
    ``MutationObserver`` sees its updates).
    """
    import ipywidgets as W

    hook = W.HTML(value=json.dumps(value or {}), layout=W.Layout(display="none"))
    hook.add_class(css_class)
    hook.add_class("wb-json-hook")
    return hook


def full_label(*buttons):
    """Size buttons to their label (ipywidgets' default 148 px cuts longer labels); returns the first."""
    for button in buttons:
        button.layout.width = "auto"
        button.layout.min_width = "fit-content"
    return buttons[0] if buttons else None


def place_labels(anchors_px, sizes_px, bounds_px, gap_px: float = 5.0) -> np.ndarray:
    """Boxes for text labels beside anchor points such that no two boxes overlap (greedy).

    Each label goes right of its anchor, vertically centred on it; if that box overlaps a label
    placed before (anchors taken top to bottom) it moves up or down by whole box heights
    (0, -1, +1, -2, +2, ...), and to the left of the anchor where the right runs out of the canvas.

    Parameters
    ----------
    anchors_px : (N, 2) float array
        Points (x right, y down), canvas pixels.
    sizes_px : (N, 2) float array
        Width and height of each label, pixels.
    bounds_px : (width, height)
        The canvas; boxes are kept inside it where possible.
    gap_px : float
        Horizontal gap between anchor and label.

    Returns
    -------
    (N, 4) float array
        ``x, y, width, height`` of each box (top-left corner), in the order of ``anchors_px``.
    """
    anchors = np.asarray(anchors_px, dtype=float).reshape(-1, 2)
    sizes = np.asarray(sizes_px, dtype=float).reshape(-1, 2)
    width, height = (float(v) for v in bounds_px)
    boxes = np.zeros((len(anchors), 4))
    placed: list[np.ndarray] = []

    def overlaps(box) -> bool:
        return any(box[0] < b[0] + b[2] and b[0] < box[0] + box[2] and box[1] < b[1] + b[3] and b[1] < box[1] + box[3]
                   for b in placed)

    for index in np.argsort(anchors[:, 1], kind="stable"):
        (x, y), (w, h) = anchors[index], sizes[index]
        left = x + gap_px if x + gap_px + w <= width else max(x - gap_px - w, 0.0)
        chosen = None
        for step in range(0, 2 * max(int(height // max(h, 1.0)), 1) + 1):
            shift = (step + 1) // 2 * (-1 if step % 2 else 1) * h * 1.05
            top = min(max(y - h / 2.0 + shift, 0.0), max(height - h, 0.0))
            box = np.array([left, top, w, h])
            if not overlaps(box):
                chosen = box
                break
        if chosen is None:
            chosen = np.array([left, min(max(y - h / 2.0, 0.0), max(height - h, 0.0)), w, h])
        boxes[index] = chosen
        placed.append(chosen)
    return boxes


def set_json(hook, value: dict) -> None:
    """Set a JSON hook's text."""
    hook.value = json.dumps(value)


def axes_geometry(figure, axes) -> dict:
    """Canvas size and the axes' box in CSS pixels (origin top-left, y down), after a draw.

    Returns
    -------
    dict
        ``canvas_px``: [w, h]; ``axes_px``: [x0, y0, x1, y1].
    """
    ratio = float(getattr(figure.canvas, "device_pixel_ratio", 1.0) or 1.0)
    width_px, height_px = figure.bbox.width / ratio, figure.bbox.height / ratio
    box = axes.get_window_extent()
    x0, x1 = box.x0 / ratio, box.x1 / ratio
    y0, y1 = height_px - box.y1 / ratio, height_px - box.y0 / ratio
    return {
        "canvas_px": [round(width_px, 3), round(height_px, 3)],
        "axes_px": [round(float(v), 3) for v in (x0, y0, x1, y1)],
    }


def image_to_png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W) uint8 array -> PNG bytes (for ``ipywidgets.Image``)."""
    import io

    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, np.asarray(rgb), format="png", cmap="gray" if np.ndim(rgb) == 2 else None, vmin=0, vmax=255)
    return buffer.getvalue()


def table_html(rows: list[dict], columns: list[str] | None = None) -> str:
    """A small HTML table of dict rows."""
    import html

    if not rows:
        return "<i>(empty)</i>"
    columns = columns or list(rows[0])
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table style='border-collapse:collapse;font-size:12px'><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
