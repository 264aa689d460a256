"""The two figures of the HTML report, inline and self-contained: loss curves as SVG, samples as PNG.

No JavaScript and no external files: the report must open anywhere, offline, years later.
"""

import base64
import html
import io
import math

import numpy as np
from PIL import Image

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def png_data_uri(image: np.ndarray, *, scale: int = 1) -> str:
    """(H, W, C) uint8 -> "data:image/png;base64,..."; `scale` enlarges by nearest neighbour."""
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def class_row(x: np.ndarray, *, pad: int = 1) -> np.ndarray:
    """(K, H, W, C) uint8 -> (H, K*(W+pad)-pad, C): the images side by side with white gaps."""
    k, h, w, c = x.shape
    row = np.full((h, k * (w + pad) - pad, c), 255, dtype=np.uint8)
    for i in range(k):
        row[:, i * (w + pad) : i * (w + pad) + w] = x[i]
    return row


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def loss_svg(series: dict[str, list[tuple[float, float]]], *, width: int = 560, height: int = 260) -> str:
    """Line chart of {label: [(step, loss), ...]} as an inline <svg> element (log-free, linear axes)."""
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    if not points:
        return "<p>not available</p>"
    left, right, top, bottom = 60, 10, 10, 30
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (width - left - right)

    def sy(v: float) -> float:
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">']
    for t in nice_ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    for t in nice_ticks(x0, x1):
        parts.append(f'<text x="{sx(t):.1f}" y="{height - 10}" text-anchor="middle">{t:.6g}</text>')
    for i, (label, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in pts if math.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 14 * (i + 1)}" text-anchor="end" '
                     f'fill="{color}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
