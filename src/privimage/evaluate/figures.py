"""The figures of the HTML report, inline and self-contained: line and bar charts as SVG, images as PNG.

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


def line_svg(series: dict[str, list[tuple[float, float]]], *, width: int = 560, height: int = 260,
             x_label: str = "step") -> str:
    """Line chart of {label: [(step, value), ...]} as an inline <svg> element (linear axes)."""
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
        parts.append(f'<text x="{sx(t):.1f}" y="{height - 14}" text-anchor="middle">{t:.6g}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 2}" text-anchor="end">{html.escape(x_label)}</text>')
    for i, (label, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in pts if math.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        if len(pts) <= 30:  # few points (a short run): mark each, so a single logged step is visible too
            parts += [f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{color}"/>'
                      for s, v in pts if math.isfinite(v)]
        parts.append(f'<text x="{width - right - 4}" y="{top + 14 * (i + 1)}" text-anchor="end" '
                     f'fill="{color}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(values: dict[str, float | None], *, label: str, width: int = 420, bar: int = 22) -> str:
    """Horizontal bars {name: value} with the value printed at each bar; None is drawn as "n/a"."""
    known = [v for v in values.values() if v is not None and math.isfinite(v)]
    if not known:
        return "<p>not available</p>"
    top, left, right = 18, 110, 60
    hi = max(max(known), 1e-12)
    height = top + bar * len(values) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">',
             f'<text x="{left}" y="12">{html.escape(label)}</text>']
    for i, (name, v) in enumerate(values.items()):
        y = top + i * bar
        parts.append(f'<text x="{left - 6}" y="{y + bar * 0.65:.1f}" text-anchor="end">{html.escape(name)}</text>')
        if v is None or not math.isfinite(v):
            parts.append(f'<text x="{left + 4}" y="{y + bar * 0.65:.1f}" fill="#999">n/a</text>')
            continue
        w = max(1.0, v / hi * (width - left - right))
        color = COLORS[i % len(COLORS)]
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{bar - 6}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + bar * 0.65:.1f}">{v:.4g}</text>')
    parts.append("</svg>")
    return "".join(parts)
