"""Error-map colours and the overlays drawn over rendered frames: panel labels and the colour bar.

The overlay is drawn once per video with Pillow (an RGBA canvas the size of the frame) and alpha-blended
into every frame inside its bounding box only, so it costs ~0.1 ms a frame. Pillow and matplotlib are
imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ERROR_COLORMAP = "YlOrRd"  # matplotlib colormap for --error-map: pale yellow (low) .. dark red (high);
# a light low end keeps an accurate face looking like a plain render, so errors stand out

Overlay = tuple[np.ndarray, np.ndarray]  # (H, W, 3) uint8 colours, (H, W, 1) float32 alpha in [0, 1]


def colormap_lut(name: str = ERROR_COLORMAP, num: int = 256) -> np.ndarray:
    """(num, 3) float32 sRGB colours in [0, 1] sampled from a matplotlib colormap."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[name](np.linspace(0.0, 1.0, num))[:, :3], dtype=np.float32)


def error_colors(
    errors_mm: np.ndarray, error_range_mm: tuple[float, float], lut: np.ndarray
) -> np.ndarray:
    """Map errors to colours: values at or below ``error_range_mm[0]`` get ``lut[0]``, at or above ``[1]`` ``lut[-1]``.

    Args:
        errors_mm: (...,) float errors in millimetres.
        error_range_mm: (low, high) millimetres, low < high.
        lut: (N, 3) colours.

    Returns:
        (..., 3) float32 colours from ``lut``.
    """
    low, high = error_range_mm
    t = np.clip((np.asarray(errors_mm, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return lut[np.rint(t * (len(lut) - 1)).astype(np.int64)]


def _font(pixels: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_text(draw: Any, xy: tuple[float, float], text: str, font: Any, ink: tuple[int, ...], anchor: str) -> None:
    """Draw ``text`` with its horizontal (l/m) and vertical (t/m/b) anchor at ``xy``.

    Placement goes through ``textbbox`` rather than PIL's ``anchor`` argument, which bitmap fonts reject.
    """
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = xy[0] - left - (right - left) / 2 if anchor[0] == "m" else xy[0] - left
    y = {"t": xy[1] - top, "m": xy[1] - (top + bottom) / 2, "b": xy[1] - bottom}[anchor[1]]
    draw.text((x, y), text, fill=ink, font=font)


def make_overlay(
    panel_size: int,
    num_panels: int,
    background: tuple[int, int, int],
    labels: Sequence[str],
    colorbar: tuple[np.ndarray, tuple[float, float]] | None,
) -> Overlay:
    """Draw labels (top of each panel) and an optional colour bar (right of the last panel).

    Args:
        panel_size: pixels, the width and height of one panel.
        num_panels: panels side by side.
        background: (r, g, b) 0..255; the ink is black on light backgrounds, white on dark ones.
        labels: one caption per panel ("" for none).
        colorbar: (lut (N, 3) float colours, (low, high) millimetres), or None.

    Returns:
        (H, W, 3) uint8 colours and (H, W, 1) float32 alpha in [0, 1] to blend over the frames.
    """
    from PIL import Image, ImageDraw

    width = panel_size * num_panels
    canvas = Image.new("RGBA", (width, panel_size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    ink = (0, 0, 0, 255) if sum(background) > 3 * 128 else (255, 255, 255, 255)
    font = _font(max(10, panel_size // 26))
    margin = max(4, panel_size // 50)
    for index, label in enumerate(labels[:num_panels]):
        if label:
            _draw_text(draw, (index * panel_size + panel_size / 2, margin), label, font, ink, "mt")
    if colorbar is not None:
        lut, (low, high) = colorbar
        small_px = max(9, panel_size // 36)
        small = _font(small_px)
        bar_w, bar_h = max(6, panel_size // 40), panel_size // 2
        x0 = width - margin - bar_w - 3 * small_px
        y0 = (panel_size - bar_h) // 2
        ramp = lut[np.linspace(len(lut) - 1, 0, bar_h).round().astype(int)]  # top = high error
        strip = np.repeat((ramp * 255).round().astype(np.uint8)[:, None, :], bar_w, axis=1)
        canvas.paste(Image.fromarray(strip, "RGB"), (x0, y0))
        for value, y in ((high, y0), ((low + high) / 2, y0 + bar_h / 2), (low, y0 + bar_h)):
            _draw_text(draw, (x0 + bar_w + 3, y), f"{value:g}", small, ink, "lm")
        _draw_text(draw, (x0 + bar_w / 2, y0 - small_px), "mm", small, ink, "mb")
    rgba = np.asarray(canvas)
    return rgba[..., :3].copy(), (rgba[..., 3:4] / 255.0).astype(np.float32)


def blend(frame: np.ndarray, overlay: Overlay, box: tuple[slice, slice]) -> np.ndarray:
    """Alpha-blend ``overlay`` into the (H, W, 3) uint8 ``frame`` inside ``box`` only; in place, returned."""
    colours, alpha = overlay
    region = frame[box].astype(np.float32)
    frame[box] = (region + alpha[box] * (colours[box] - region) + 0.5).astype(np.uint8)
    return frame


def bounding_box(alpha: np.ndarray) -> tuple[slice, slice]:
    """(rows, columns) slices of the smallest box holding every pixel of (H, W, 1) ``alpha`` above 0."""
    rows = np.flatnonzero(alpha.any(axis=(1, 2)))
    cols = np.flatnonzero(alpha.any(axis=(0, 2)))
    if len(rows) == 0:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

