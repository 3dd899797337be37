"""Structured chart data from matplotlib figures, made inside the python kernel.

:func:`register` adds an IPython formatter for ``matplotlib.figure.Figure`` under
:data:`MIME`, so every figure a cell shows (``plt.show()``, the inline backend's flush, a
figure as the cell's value) carries, beside its PNG, a JSON text shaped as E2B's code
interpreter sends it (``type`` line, scatter, bar, pie, box_and_whisker, superchart or
unknown; ``title``; axis labels, units, ticks and scales; ``elements``). Standard library and
matplotlib only; matplotlib is imported when a figure is shown, never at kernel start.

The data is bounded here (:data:`MAX_POINTS`, :data:`MAX_ELEMENTS`, :data:`MAX_TEXT`; a
truncated chart says ``"truncated": true``) and checked again by the engine, which trusts
nothing a kernel sends. Any failure to read a figure gives no chart, never an error in the cell.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import re
from typing import Any

MIME = "application/vnd.stockade.chart+json"
#: Points kept in one chart, over all its elements; the rest is cut and the chart marked.
MAX_POINTS = 100_000
#: Elements (series, bars, wedges, boxes, sub-charts) kept in one chart.
MAX_ELEMENTS = 1000
#: Characters kept of one label or title.
MAX_TEXT = 1000
UNIT = re.compile(r"\s\((.+?)\)$|\s\[(.+?)\]$")


class _Budget:
    """What is left of a chart's point budget, and whether anything was cut."""

    def __init__(self) -> None:
        self.points = MAX_POINTS
        self.truncated = False

    def count(self, wanted: int) -> int:
        """How many of ``wanted`` points fit; takes them from the budget."""
        granted = min(wanted, max(0, self.points))
        self.truncated = self.truncated or granted < wanted
        self.points -= granted
        return granted

    def take(self, items: list[Any]) -> list[Any]:
        return items[: self.count(len(items))]

    def elements(self, items: list[Any]) -> list[Any]:
        if len(items) > MAX_ELEMENTS:
            self.truncated = True
        return items[:MAX_ELEMENTS]


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT]


def _number(value: Any) -> float | None:
    value = value.item() if hasattr(value, "item") else value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _value(value: Any) -> float | str | None:
    """A data value as JSON: a number, an ISO date or a string."""
    value = value.item() if hasattr(value, "item") and not isinstance(value, str) else value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (int, float)):
        return _number(value)
    return _text(value)


def _scale(axis: Any, ax: Any, name: str) -> str:
    module = type(getattr(axis, "converter", None)).__module__
    if module == "matplotlib.dates":
        return "datetime"
    if module == "matplotlib.category":
        return "categorical"
    return str(ax.get_xscale() if name == "x" else ax.get_yscale())


def _categories(axis: Any) -> dict[float, str]:
    """A categorical axis's positions -> category names (matplotlib's ``UnitData``)."""
    mapping = getattr(getattr(axis, "units", None), "_mapping", None)
    return {float(v): _text(k) for k, v in mapping.items()} if isinstance(mapping, dict) else {}


def _coordinate(value: Any, scale: str, categories: dict[float, str]) -> float | str | None:
    """A plotted (converted) coordinate as the data value it stands for."""
    number = _number(value)
    if scale == "datetime":
        from matplotlib import dates

        return None if number is None else dates.num2date(number).isoformat()
    if scale == "categorical" and number in categories:
        return categories[number]
    return _value(value)


def _base(ax: Any, kind: str) -> dict[str, Any]:
    chart: dict[str, Any] = {"type": kind, "title": _text(ax.get_title()) or None, "elements": []}
    if kind != "pie":
        for name in ("x", "y"):
            label = _text(ax.get_xlabel() if name == "x" else ax.get_ylabel())
            unit = UNIT.search(label)
            chart[f"{name}_label"] = label or None
            chart[f"{name}_unit"] = (unit.group(1) or unit.group(2)) if unit else None
    return chart


def _swap(chart: dict[str, Any]) -> None:
    """Horizontal bars and boxes: the category axis is y, as E2B reports it."""
    for field in ("label", "unit"):
        chart[f"x_{field}"], chart[f"y_{field}"] = chart[f"y_{field}"], chart[f"x_{field}"]


def _point_chart(ax: Any, kind: str, budget: _Budget) -> dict[str, Any]:
    chart = _base(ax, kind)
    scales = {"x": _scale(ax.xaxis, ax, "x"), "y": _scale(ax.yaxis, ax, "y")}
    names = {"x": _categories(ax.xaxis), "y": _categories(ax.yaxis)}
    for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        ticks = list(axis.get_ticklocs())[:MAX_ELEMENTS]
        chart[f"{name}_scale"] = scales[name]
        chart[f"{name}_ticks"] = [_coordinate(t, scales[name], names[name]) for t in ticks]
        chart[f"{name}_tick_labels"] = [_text(t.get_text()) for t in axis.get_ticklabels()][:MAX_ELEMENTS]
    if kind == "line":
        series = [(line.get_label(), line.get_xydata()) for line in ax.lines]
    else:
        series = [(c.get_label(), c.get_offsets()) for c in ax.collections]
    for label, xy in budget.elements(series):
        pairs = xy[: budget.count(len(xy))].tolist()  # numpy: plain floats, fast
        columns = [
            _column([pair[axis] for pair in pairs], scales[name], names[name])
            for axis, name in enumerate("xy")
        ]
        chart["elements"].append({"label": _text(label), "points": list(zip(*columns))})
    return chart


def _column(values: list[Any], scale: str, categories: dict[float, str]) -> list[float | str | None]:
    """Plotted coordinates of one axis as data values (plain numbers need no conversion)."""
    if scale in ("datetime", "categorical"):
        return [_coordinate(v, scale, categories) for v in values]
    return [v if isinstance(v, float) and math.isfinite(v) else _number(v) for v in values]


def _ticks(axis: Any) -> list[tuple[float, str]]:
    """An axis's tick positions and labels (read once: each read lays the ticks out again)."""
    return [
        (float(loc), _text(label.get_text()))
        for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels())
    ]


def _tick_label(ticks: list[tuple[float, str]], position: float) -> str:
    """The label of the tick at ``position``, or the position itself."""
    for location, label in ticks:
        if abs(location - position) < 1e-9:
            return label
    return _text(f"{position:g}")


def _bar_chart(ax: Any, budget: _Budget) -> dict[str, Any]:
    chart = _base(ax, "bar")
    horizontal = False
    xticks, yticks = _ticks(ax.xaxis), _ticks(ax.yaxis)
    for number, container in enumerate(budget.elements(list(ax.containers))):
        group = _text(container.get_label())
        if group.startswith("_"):
            group = f"Group {number}"
        horizontal = getattr(container, "orientation", "vertical") == "horizontal"
        for rect in budget.take(list(container)):
            if horizontal:
                label = _tick_label(yticks, rect.get_y() + rect.get_height() / 2)
                value = rect.get_width()
            else:
                label = _tick_label(xticks, rect.get_x() + rect.get_width() / 2)
                value = rect.get_height()
            chart["elements"].append({"label": label, "group": group, "value": _number(value)})
    chart["elements"] = budget.elements(chart["elements"])
    if horizontal:
        _swap(chart)
    return chart


def _pie_chart(ax: Any, budget: _Budget) -> dict[str, Any]:
    chart = _base(ax, "pie")
    for wedge in budget.elements(list(ax.patches)):
        angle = _number(abs(wedge.theta2 - wedge.theta1))
        chart["elements"].append(
            {"label": _text(wedge.get_label()), "angle": angle, "radius": _number(wedge.r)}
        )
    return chart


def _box_chart(ax: Any, budget: _Budget) -> dict[str, Any]:
    """Boxes drawn with ``patch_artist=True``: each box a PathPatch, its whiskers, caps,
    median and fliers Line2D objects found by where they lie."""
    chart = _base(ax, "box_and_whisker")
    boxes = []
    for patch in budget.elements(list(ax.patches)):
        vertices = patch.get_path().vertices
        boxes.append((min(vertices[:, 0]), max(vertices[:, 0]), min(vertices[:, 1]), max(vertices[:, 1])))
    xticks = [float(t) for t in ax.get_xticks()]
    vertical = all(any(abs((b[0] + b[1]) / 2 - t) < 1e-6 for t in xticks) for b in boxes)
    lines = [line.get_xydata() for line in ax.lines]
    if not vertical:  # work in (along, across) coordinates: swap x and y
        boxes = [(b[2], b[3], b[0], b[1]) for b in boxes]
        lines = [xy[:, ::-1] for xy in lines]
    ticks = _ticks(ax.xaxis if vertical else ax.yaxis)
    for low, high, q1, q3 in boxes:
        center = (low + high) / 2
        element: dict[str, Any] = {
            "label": _tick_label(ticks, center),
            "min": q1,
            "first_quartile": q1,
            "median": None,
            "third_quartile": q3,
            "max": q3,
            "outliers": [],
        }
        for xy in lines:
            if not len(xy):
                continue
            along, across = xy[:, 0], xy[:, 1]
            if not all(low - 1e-9 <= a <= high + 1e-9 for a in along):
                continue
            if len(xy) == 2 and abs(along[0] - along[1]) < 1e-9:  # a whisker
                element["min"] = min(element["min"], *across)
                element["max"] = max(element["max"], *across)
            elif len(xy) == 2 and abs(across[0] - across[1]) < 1e-9:  # median or cap
                if abs(along[0] - low) < 1e-9 and abs(along[1] - high) < 1e-9:
                    element["median"] = across[0]
            elif all(abs(a - center) < 1e-9 for a in along):  # fliers
                element["outliers"] = budget.take(list(across))
        for field in ("min", "first_quartile", "median", "third_quartile", "max"):
            element[field] = _number(element[field])
        element["outliers"] = [_number(o) for o in element["outliers"]]
        chart["elements"].append(element)
    if not vertical:
        _swap(chart)
    return chart


def axes_chart(ax: Any, budget: _Budget) -> dict[str, Any]:
    """One axes as a chart, classified as E2B does by the kinds of artists on it."""
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch, Rectangle, Wedge

    objects = list(ax.lines) + list(ax.collections) + list(ax.patches)
    if all(isinstance(o, Line2D) for o in objects):
        return _point_chart(ax, "line", budget)
    if all(isinstance(o, (PathPatch, Line2D)) for o in objects):
        return _box_chart(ax, budget)
    if all(isinstance(o, PathCollection) for o in objects):
        return _point_chart(ax, "scatter", budget)
    if all(isinstance(o, Rectangle) for o in objects):
        return _bar_chart(ax, budget)
    if all(isinstance(o, Wedge) for o in objects):
        return _pie_chart(ax, budget)
    return {"type": "unknown", "title": _text(ax.get_title()) or None, "elements": []}


def figure_chart(figure: Any) -> dict[str, Any] | None:
    """The chart of a figure (a superchart for several axes); None if it has none or cannot
    be read."""
    try:
        axes = figure.get_axes()
        if not axes:
            return None
        budget = _Budget()
        if len(axes) == 1:
            chart = axes_chart(axes[0], budget)
        else:
            title = getattr(figure, "_suptitle", None)
            chart = {
                "type": "superchart",
                "title": _text(title.get_text()) if title is not None else None,
                "elements": [axes_chart(ax, budget) for ax in budget.elements(axes)],
            }
        if budget.truncated:
            chart["truncated"] = True
        return chart
    except Exception:  # noqa: BLE001 - a figure we cannot read gets no chart, not an error
        return None


def chart_json(figure: Any) -> str | None:
    """:func:`figure_chart` as JSON text. The garbage collector is held off meanwhile: the
    many small objects of a large chart would make it sweep the kernel's heap again and again
    (for 100,000 points, 240 ms instead of 40)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        chart = figure_chart(figure)
        return None if chart is None else json.dumps(chart, separators=(",", ":"))
    finally:
        if collecting:
            gc.enable()


def register(shell: Any) -> None:
    """Add the chart formatter to an IPython shell's display formatter. It gives the chart as
    JSON text: a string passes the kernel's and the server's output handling in one piece
    (a dict would be walked value by value), and the engine can bound it before parsing.

    It finds figures by class name itself: a printer registered by type would be removed when
    matplotlib's inline backend loads (``select_figure_formats`` pops ``Figure`` from every
    formatter)."""
    from IPython.core.formatters import BaseFormatter
    from traitlets import Unicode

    class ChartFormatter(BaseFormatter):  # type: ignore[misc]
        format_type = Unicode(MIME)
        _return_type = (str,)

        def __call__(self, obj: Any) -> str | None:
            if self.enabled and any(
                (getattr(cls, "__module__", ""), cls.__name__) == ("matplotlib.figure", "Figure")
                for cls in type(obj).__mro__
            ):
                return chart_json(obj)
            return None

    shell.display_formatter.formatters[MIME] = ChartFormatter(parent=shell.display_formatter)
