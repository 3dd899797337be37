"""Checking the chart data a code context sends beside a figure (``stockade.interpreter.charts``).

The chart is made inside the sandbox by code the cell can replace, so it is untrusted: it must
be JSON text of at most :data:`MAX_CHART_BYTES` (checked before parsing) and match the shape
E2B's SDK parses (line, scatter, bar, pie, box_and_whisker, superchart, unknown). A chart that
does not is dropped, and the caller gets a line on stderr saying so; the rest of the result (the
PNG) is kept. What passes is rebuilt from the checked fields only, as a JSON object (a dict) in
the bundle.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from ..interpreter.charts import MAX_ELEMENTS, MAX_POINTS, MAX_TEXT, MIME

#: Largest chart accepted, as JSON.
MAX_CHART_BYTES = 4 << 20

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Number = float | None
Value = float | Text | None


class Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Base(Shape):
    title: Text | None = None
    truncated: bool = False


class Axes(Base):
    x_label: Text | None = None
    y_label: Text | None = None
    x_unit: Text | None = None
    y_unit: Text | None = None


class PointData(Shape):
    label: Text
    points: list[tuple[Value, Value]] = Field(max_length=MAX_POINTS)


class PointChart(Axes):
    type: Literal["line", "scatter"]
    x_scale: Text = "linear"
    y_scale: Text = "linear"
    x_ticks: list[Value] = Field(default_factory=list, max_length=MAX_ELEMENTS)
    y_ticks: list[Value] = Field(default_factory=list, max_length=MAX_ELEMENTS)
    x_tick_labels: list[Text] = Field(default_factory=list, max_length=MAX_ELEMENTS)
    y_tick_labels: list[Text] = Field(default_factory=list, max_length=MAX_ELEMENTS)
    elements: list[PointData] = Field(max_length=MAX_ELEMENTS)


class BarData(Shape):
    label: Text
    group: Text
    value: Number


class BarChart(Axes):
    type: Literal["bar"]
    elements: list[BarData] = Field(max_length=MAX_ELEMENTS)


class PieData(Shape):
    label: Text
    angle: Number
    radius: Number


class PieChart(Base):
    type: Literal["pie"]
    elements: list[PieData] = Field(max_length=MAX_ELEMENTS)


class BoxData(Shape):
    label: Text
    min: Number
    first_quartile: Number
    median: Number
    third_quartile: Number
    max: Number
    outliers: list[Number] = Field(default_factory=list, max_length=MAX_POINTS)


class BoxChart(Axes):
    type: Literal["box_and_whisker"]
    elements: list[BoxData] = Field(max_length=MAX_ELEMENTS)


class UnknownChart(Base):
    type: Literal["unknown"]
    elements: list[None] = Field(default_factory=list, max_length=0)


Single = Annotated[Union[PointChart, BarChart, PieChart, BoxChart, UnknownChart], Field(discriminator="type")]


class SuperChart(Base):
    type: Literal["superchart"]
    elements: list[Single] = Field(max_length=MAX_ELEMENTS)


class Chart(RootModel[Any]):
    root: Annotated[Union[Single, SuperChart], Field(discriminator="type")]


def _check(value: Any) -> dict[str, Any]:
    """The chart, rebuilt from checked fields (NaN and infinities, which JSON cannot carry, as
    null); raises ValueError saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError("not a chart (expected JSON text)")
    if len(value) > MAX_CHART_BYTES:
        raise ValueError(f"{len(value)} bytes of JSON, more than {MAX_CHART_BYTES}")
    try:
        chart = Chart.model_validate_json(value).root
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][:6])
        raise ValueError(f"not a chart ({where + ': ' if where else ''}{first['msg']})"[:300]) from None
    dumped: dict[str, Any] = json.loads(chart.model_dump_json())  # non-finite floats: null
    for part in [dumped, *(dumped["elements"] if dumped["type"] == "superchart" else [])]:
        if not part.pop("truncated"):
            continue
        part["truncated"] = True  # said only when true
    return dumped


def check_bundle(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``data`` with its chart checked: (bundle, None), or (bundle without the chart, why)."""
    if MIME not in data:
        return data, None
    try:
        return {**data, MIME: _check(data[MIME])}, None
    except (ValueError, RecursionError) as exc:
        return {k: v for k, v in data.items() if k != MIME}, f"[stockade: chart dropped: {exc}]\n"
