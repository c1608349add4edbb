"""Inline SVG charts, drawn in Python: stacked bars over time and a
per-person activity strip. No script, no external reference: the SVG is part
of the page. Every text is escaped by the caller's ``esc``."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

WIDTH = 900
HEIGHT = 180
LEFT = 56
BOTTOM = 22
TOP = 8
# the bars start below the legend
PLOT_TOP = TOP + 16


def _esc(value: object) -> str:
    return escape(str(value), quote=True)


def _clock(ts: float, width: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    if width >= 86400:
        return dt.strftime("%Y-%m-%d")
    if width >= 3600:
        return dt.strftime("%m-%d %H:%M")
    return dt.strftime("%H:%M:%S") if width < 60 else dt.strftime("%H:%M")


def stacked_bars(
    chart_id: str,
    title: str,
    series: list[tuple[float, list[int]]],
    names: list[str],
    colors: list[str],
    bucket: float,
) -> str:
    """Bars per bucket, the ``names`` stacked bottom to top."""
    n = len(series)
    totals = [sum(values) for _, values in series]
    peak = max(totals, default=0)
    plot_w = WIDTH - LEFT - 8
    plot_h = HEIGHT - TOP - BOTTOM - 16
    out = [
        f'<svg class="chart" id="{_esc(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{_esc(chart_id)}-t" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_esc(chart_id)}-t">{_esc(title)}</title>',
        f'<line x1="{LEFT}" y1="{PLOT_TOP + plot_h}" x2="{WIDTH - 8}" y2="{PLOT_TOP + plot_h}" '
        'class="axis"/>',
        f'<text x="{LEFT - 4}" y="{PLOT_TOP + 10}" class="tick" text-anchor="end">{peak:,}</text>',
        f'<text x="{LEFT - 4}" y="{PLOT_TOP + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    if n and peak:
        bar_w = plot_w / n
        for i, (_, values) in enumerate(series):
            x = LEFT + i * bar_w
            y: float = PLOT_TOP + plot_h
            for value, color in zip(values, colors, strict=False):
                if not value:
                    continue
                h = plot_h * value / peak
                y -= h
                out.append(
                    f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(bar_w - 0.5, 0.5):.2f}" '
                    f'height="{h:.2f}" fill="{color}"/>'
                )
        for i in range(0, n, max(1, n // 6)):
            x = LEFT + i * bar_w
            out.append(
                f'<text x="{x:.2f}" y="{HEIGHT - 6}" class="tick">'
                f"{_esc(_clock(series[i][0], bucket))}</text>"
            )
    elif not peak:
        out.append(
            f'<text x="{LEFT + plot_w / 2}" y="{PLOT_TOP + plot_h / 2}" class="tick" '
            'text-anchor="middle">none</text>'
        )
    # the legend, inside the picture (colours as attributes: no style needed)
    x = LEFT + 8
    for name, color in zip(names, colors, strict=False):
        out.append(
            f'<rect x="{x}" y="{TOP}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{TOP + 9}" class="tick">{_esc(name)}</text>'
        )
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def activity_strip(
    chart_id: str,
    title: str,
    rows: list[tuple[str, list[int]]],
    starts: list[float],
    bucket: float,
) -> str:
    """One line per person, one cell per bucket, darker for more requests."""
    label_w = 190
    cell_h = 16
    n = len(starts)
    height = TOP + cell_h * len(rows) + BOTTOM
    peak = max((v for _, values in rows for v in values), default=0)
    plot_w = WIDTH - label_w - 8
    out = [
        f'<svg class="chart" id="{_esc(chart_id)}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{_esc(chart_id)}-t" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_esc(chart_id)}-t">{_esc(title)}</title>',
    ]
    cell_w = plot_w / n if n else 0
    for r, (name, values) in enumerate(rows):
        y = TOP + r * cell_h
        short = name if len(name) <= 28 else name[:13] + "…" + name[-14:]
        out.append(
            f'<text x="{label_w - 6}" y="{y + cell_h - 4}" class="tick" text-anchor="end">'
            f"{_esc(short)}</text>"
        )
        for i, v in enumerate(values):
            if not v:
                continue
            shade = 0.15 + 0.85 * v / peak if peak else 0
            out.append(
                f'<rect x="{label_w + i * cell_w:.2f}" y="{y + 1}" '
                f'width="{max(cell_w - 0.5, 0.5):.2f}" height="{cell_h - 2}" '
                f'fill="#1f5fa8" fill-opacity="{shade:.2f}"/>'
            )
    for i in range(0, n, max(1, n // 6)):
        out.append(
            f'<text x="{label_w + i * cell_w:.2f}" y="{height - 6}" class="tick">'
            f"{_esc(_clock(starts[i], bucket))}</text>"
        )
    out.append("</svg>")
    return "".join(out)
