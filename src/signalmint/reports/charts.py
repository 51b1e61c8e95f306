"""A report's bar charts, drawn three ways from the same numbers: inline SVG (the web page), PNG
(the email, as a data URI: mail clients drop SVG) and reportlab drawing (the PDF, in pdf.py)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape

from PIL import Image, ImageDraw, ImageFont

__all__ = ["bars_png", "bars_svg", "png_data_uri"]

BAR, AXIS, INK, MUTED, NEG = "#0d9488", "#cbd5e1", "#0f172a", "#64748b", "#e5364d"


def _label_every(n: int, room: int = 12) -> int:
    return max(1, -(-n // room))


def bars_svg(
    labels: Sequence[str], values: Sequence[float], *, title: str, width: int = 1040, height: int = 220
) -> str:
    """A bar chart as a standalone ``<svg role="img">`` (negative values hang below the axis)."""
    n = len(values)
    top, bottom, left, right = 16, 28, 8, 8
    hi, lo = max([0.0, *values]), min([0.0, *values])
    span = (hi - lo) or 1.0
    plot_h = height - top - bottom
    zero = top + plot_h * hi / span
    step = (width - left - right) / max(n, 1)
    every = _label_every(n)
    parts = [f'<line x1="{left}" x2="{width - right}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="{AXIS}"/>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * abs(value) / span
        y = zero - h if value >= 0 else zero
        x = left + i * step + step * 0.15
        colour = BAR if value >= 0 else NEG
        parts.append(
            f'<rect class="report-bar" x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{max(h, 0.5):.1f}" '
            f'fill="{colour}" rx="2"><title>{escape(label)}: {value:g}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{height - 8}" text-anchor="middle" fill="{MUTED}">'
                f"{escape(label)}</text>"
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif" font-size="11" '
        f'style="width: 100%; height: auto"><title>{escape(title)}</title>{"".join(parts)}</svg>'
    )


def bars_png(
    labels: Sequence[str], values: Sequence[float], *, title: str, width: int = 720, height: int = 220
) -> bytes:
    """The same bar chart as a PNG (drawn at twice the size, for sharp text on high-density screens)."""
    scale = 2
    image = Image.new("RGB", (width * scale, height * scale), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11 * scale)
    top, bottom, left, right = 30, 28, 8, 8
    draw.text((left * scale, 6 * scale), title, fill=INK, font=font)
    n = len(values)
    hi, lo = max([0.0, *values]), min([0.0, *values])
    span = (hi - lo) or 1.0
    plot_h = height - top - bottom
    zero = top + plot_h * hi / span
    step = (width - left - right) / max(n, 1)
    every = _label_every(n)
    draw.line([(left * scale, zero * scale), ((width - right) * scale, zero * scale)], fill=AXIS, width=scale)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * abs(value) / span
        y0, y1 = (zero - h, zero) if value >= 0 else (zero, zero + h)
        x = left + i * step + step * 0.15
        draw.rectangle(
            [(x * scale, y0 * scale), ((x + step * 0.7) * scale, max(y1, y0 + 0.5) * scale)],
            fill=BAR if value >= 0 else NEG,
        )
        if i % every == 0:
            draw.text(((x + step * 0.35) * scale, (height - 20) * scale), label, fill=MUTED, font=font, anchor="mt")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
