"""A sandbox's usage charts (CPU, memory, processes) drawn from its usage history
(``GET /sandboxes/{id}/usage``): SVG polylines computed here, both for the page and for its
live updates, so the browser only swaps the points."""

from __future__ import annotations

from typing import Any, Callable

from ..models import UsageHistory, UsageSample
from .pages import e

WIDTH, HEIGHT = 300, 80
#: Samples the engine keeps per sandbox: the charts span that many intervals.
KEPT = 120
#: The shortest span a chart shows, in samples (a young sandbox's history does not fill it).
SHORTEST = 12
Value = Callable[[UsageSample], float]
#: name, caption, value of a sample, unit, decimals
CHARTS: tuple[tuple[str, str, Value, str, int], ...] = (
    ("cpu", "CPU (% of one core)", lambda s: s.cpu_percent, " %", 1),
    ("memory", "memory (MiB)", lambda s: s.memory_bytes / (1 << 20), " MiB", 1),
    ("pids", "processes", lambda s: float(s.pids), "", 0),
)


def series(history: UsageHistory | None) -> dict[str, dict[str, Any]]:
    """Each chart's polyline ``points`` (newest sample at the right edge, the kept history
    across), its ``latest`` value in words, its ``top`` (the value at the top edge)
    and its number of ``samples``."""
    items = history.items if history else []
    out: dict[str, dict[str, Any]] = {}
    if not items:
        return {name: {"points": "", "latest": "", "top": "", "samples": 0} for name, *_ in CHARTS}
    newest = items[-1].time
    interval = history.interval if history else 5.0
    # The history so far across the width (at least a dozen samples' worth), the newest right.
    window = max(newest - items[0].time, interval * (SHORTEST - 1), 1.0)
    for name, _, value, unit, decimals in CHARTS:
        values = [value(s) for s in items]
        top = max(1.0, *values) * 1.15
        points = " ".join(
            f"{WIDTH - (newest - s.time) / window * WIDTH:.1f},{HEIGHT - v / top * (HEIGHT - 2):.1f}"
            for s, v in zip(items, values)
        )
        out[name] = {
            "points": points,
            "latest": f"{values[-1]:.{decimals}f}{unit}",
            "top": f"{top:.{decimals}f}{unit}",
            "samples": len(values),
        }
    return out


def charts(history: UsageHistory | None) -> str:
    """The charts' HTML (``static/detail.js`` updates their points and captions)."""
    drawn = series(history)
    minutes = (history.interval if history else 5.0) * KEPT / 60
    figures = "".join(
        f'<figure data-latest="{e(drawn[name]["latest"])}"><figcaption data-latest="'
        f'{e(drawn[name]["latest"])}">{e(label)}</figcaption>'
        f'<svg id="chart-{name}" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" '
        f'role="img" aria-label="{e(label)}"><polyline points="{drawn[name]["points"]}" '
        f'fill="none" stroke="#0969da" stroke-width="1.5" vector-effect="non-scaling-stroke"/>'
        f'</svg><span class="top" data-top="{name}">top {e(drawn[name]["top"])}</span></figure>'
        for name, label, *_ in CHARTS
    )
    samples = drawn["cpu"]["samples"]
    return (
        f'<h2>Usage <span class="hint">(one sample every '
        f"{history.interval if history else 5:g} s, up to the last {minutes:g} minutes)"
        f"</span></h2>"
        f'<div id="charts" data-samples="{samples}">{figures}</div>'
    )
