"""E2B's code interpreter semantics through the unmodified ``e2b-code-interpreter`` SDK:
structured chart data beside the PNG of a matplotlib figure, checked by value and attacked with
hostile payloads, and per-execution environment variables (``run_code(envs=)``)."""

from __future__ import annotations

import base64
import os
from typing import Iterator

import pytest
from e2b.exceptions import SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
)
from server_harness import Server, finish, needs_root, new_data_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]
MIME = "application/vnd.stockade.chart+json"
PLT = "import matplotlib.pyplot as plt\n"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir()).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def sb(server: Server) -> Iterator[Sandbox]:
    """One code-interpreter sandbox with a sandbox-wide variable, reached only through the
    E2B variables."""
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(
        E2B_API_URL=server.url + "/e2b",
        E2B_SANDBOX_URL=server.url + "/e2b",
        E2B_API_KEY=server.new_key("e2b-charts"),
    )
    sandbox = Sandbox.create(envs={"GLOBAL": "sandbox-wide"}, timeout=600)
    yield sandbox
    sandbox.kill()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def figure(sb: Sandbox, code: str) -> object:
    """Run a plotting cell; return its one result's chart, after checking the PNG beside it."""
    execution = sb.run_code(PLT + code + "\nplt.show()")
    assert execution.error is None, execution.error
    (result,) = execution.results
    assert result.png and base64.b64decode(result.png).startswith(b"\x89PNG")
    assert result.chart is not None and "chart" in result.formats()
    return result.chart


def test_line_chart(sb: Sandbox) -> None:
    chart = figure(
        sb,
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2, 3], [1, 4, 9], label='squares')\n"
        "ax.plot([1, 2, 3], [2.5, 3, 3.5], label='linear')\n"
        "ax.set_title('Growth'); ax.set_xlabel('Time (s)'); ax.set_ylabel('Distance [m]')",
    )
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("Growth", "Time (s)", "Distance [m]")
    assert (chart.x_unit, chart.y_unit) == ("s", "m")
    assert chart.x_scale == ScaleType.LINEAR and chart.y_scale == ScaleType.LINEAR
    assert [e.label for e in chart.elements] == ["squares", "linear"]
    assert chart.elements[0].points == [(1, 1), (2, 4), (3, 9)]
    assert chart.elements[1].points == [(1, 2.5), (2, 3), (3, 3.5)]
    assert 1.0 in chart.x_ticks and len(chart.x_tick_labels) == len(chart.x_ticks)
    categorical = figure(sb, "plt.plot(['mon', 'tue', 'wed'], [5, 3, 4], label='load')")
    assert isinstance(categorical, LineChart) and categorical.x_scale == ScaleType.CATEGORICAL
    assert categorical.elements[0].points == [("mon", 5), ("tue", 3), ("wed", 4)]
    assert categorical.x_ticks == ["mon", "tue", "wed"] and categorical.x_tick_labels == ["mon", "tue", "wed"]


def test_scatter_chart_with_dates(sb: Sandbox) -> None:
    chart = figure(
        sb,
        "import datetime\n"
        "days = [datetime.datetime(2024, 1, d) for d in (1, 2, 3)]\n"
        "plt.scatter(days, [10, 20, 15], label='visits')\n"
        "plt.scatter(days, [1, 2, 3], label='sales')\n"
        "plt.title('Traffic')",
    )
    assert isinstance(chart, ScatterChart) and chart.title == "Traffic"
    assert chart.x_scale == ScaleType.DATETIME and chart.y_scale == ScaleType.LINEAR
    assert [e.label for e in chart.elements] == ["visits", "sales"]
    visits = chart.elements[0].points
    assert [x[:10] for x, _ in visits] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert [y for _, y in visits] == [10, 20, 15]


def test_bar_charts_vertical_and_horizontal(sb: Sandbox) -> None:
    chart = figure(
        sb,
        "plt.bar(['A', 'B', 'C'], [3, 7, 5], label='2024')\n"
        "plt.title('Sales'); plt.xlabel('Product'); plt.ylabel('Units')",
    )
    assert isinstance(chart, BarChart) and chart.type == ChartType.BAR
    assert (chart.title, chart.x_label, chart.y_label) == ("Sales", "Product", "Units")
    assert [(e.label, e.value, e.group) for e in chart.elements] == [
        ("A", 3, "2024"),
        ("B", 7, "2024"),
        ("C", 5, "2024"),
    ]
    horizontal = figure(sb, "plt.barh(['x', 'y'], [1.5, 2.5]); plt.xlabel('Amount'); plt.ylabel('Kind')")
    assert isinstance(horizontal, BarChart)
    assert [(e.label, e.value) for e in horizontal.elements] == [("x", 1.5), ("y", 2.5)]
    assert (horizontal.x_label, horizontal.y_label) == ("Kind", "Amount")  # category axis first


def test_pie_chart(sb: Sandbox) -> None:
    chart = figure(sb, "plt.pie([1, 1, 2], labels=['cats', 'dogs', 'birds']); plt.title('Pets')")
    assert isinstance(chart, PieChart) and chart.title == "Pets"
    assert [(e.label, round(e.angle, 6), e.radius) for e in chart.elements] == [
        ("cats", 90, 1),
        ("dogs", 90, 1),
        ("birds", 180, 1),
    ]


def test_box_and_whisker_chart(sb: Sandbox) -> None:
    chart = figure(
        sb,
        "fig, ax = plt.subplots()\n"
        "ax.boxplot([[1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 30]], labels=['low', 'high'], patch_artist=True)\n"
        "ax.set_title('Spread'); ax.set_ylabel('Score')",
    )
    assert isinstance(chart, BoxAndWhiskerChart) and chart.type == ChartType.BOX_AND_WHISKER
    assert chart.title == "Spread" and chart.y_label == "Score"
    low, high = chart.elements
    assert (low.label, low.min, low.first_quartile, low.median, low.third_quartile, low.max) == (
        "low",
        1,
        2,
        3,
        4,
        5,
    )
    assert low.outliers == []
    assert (high.label, high.min, high.first_quartile, high.median, high.third_quartile, high.max) == (
        "high",
        2,
        4.5,
        7,
        9.5,
        10,
    )
    assert high.outliers == [30]


def test_figure_with_several_axes_is_a_superchart(sb: Sandbox) -> None:
    chart = figure(
        sb,
        "fig, (left, right) = plt.subplots(1, 2)\n"
        "fig.suptitle('Both')\n"
        "left.plot([0, 1], [1, 0]); left.set_title('down')\n"
        "right.bar(['p', 'q'], [4, 2]); right.set_title('bars')",
    )
    assert isinstance(chart, SuperChart) and chart.title == "Both"
    line, bar = chart.elements
    assert (
        isinstance(line, LineChart) and line.title == "down" and line.elements[0].points == [(0, 1), (1, 0)]
    )
    assert isinstance(bar, BarChart) and [(e.label, e.value) for e in bar.elements] == [("p", 4), ("q", 2)]


def test_huge_figure_is_truncated_with_a_marker(sb: Sandbox) -> None:
    chart = figure(sb, "plt.plot(range(300_000))")
    assert isinstance(chart, LineChart)
    assert chart.to_dict()["truncated"] is True
    assert len(chart.elements[0].points) == 100_000 and chart.elements[0].points[-1] == (99_999, 99_999)


def test_hostile_figures(sb: Sandbox) -> None:
    """A figure the extractor cannot read gives its PNG and no chart, without an error; one
    with more series than a chart holds is cut and marked."""
    execution = sb.run_code(
        PLT + "class Boom:\n    def __str__(self): raise RuntimeError('boom')\n"
        "line, = plt.plot([1, 2], [3, 4])\nline.get_label = Boom\nplt.show()"
    )
    assert execution.error is None and execution.logs.stderr == []
    (result,) = execution.results
    assert result.png and result.chart is None
    many = figure(sb, "for i in range(1500): plt.plot([0, 1], [i, i])")
    assert isinstance(many, LineChart) and len(many.elements) == 1000 and many.to_dict()["truncated"]


@pytest.mark.parametrize(
    "payload, why",
    [
        (
            "json.dumps({'type': 'line', 'title': 'x', 'elements': 'not a list'})",
            "not a chart (line.elements",
        ),
        ("json.dumps({'type': 'pie', 'elements': [{'label': 'a', 'angle': 'wide', 'radius': 1}]})", "angle"),
        ("json.dumps({'type': 'exploit', 'elements': []})", "not a chart"),
        (
            "json.dumps({'type': 'bar', 'elements': [{'label': 'a' * 5000, 'group': 'g', 'value': 1}]})",
            "at most 1000",
        ),
        ("'x' * 5_000_000", "bytes of JSON, more than"),
        ("'[' * 100_000 + ']' * 100_000", "recursion limit"),
        ("{'type': 'pie', 'elements': []}", "expected JSON text"),  # an object, not text
    ],
)
def test_forged_chart_payloads_are_dropped(sb: Sandbox, payload: str, why: str) -> None:
    """A cell can publish anything under the chart's MIME type: the server checks it, drops
    what is not a bounded chart (saying so on stderr), keeps the rest of the result, and the
    sandbox keeps working."""
    execution = sb.run_code(
        "import json\nfrom IPython.display import display\n"
        f"display({{'text/plain': 'forged', {MIME!r}: {payload}}}, raw=True)"
    )
    assert execution.error is None
    assert [r.text for r in execution.results] == ["forged"]
    assert all(r.chart is None for r in execution.results)
    (line,) = [s for s in execution.logs.stderr if "chart dropped" in s]
    assert line.startswith("[stockade: chart dropped: ") and why in line, line
    assert sb.run_code("6 * 7").text == "42"


def test_garbage_written_into_the_context_pipe_is_ignored(sb: Sandbox) -> None:
    """A cell can write into its interpreter server's event pipe: a line nested deeper than
    any JSON parser's stack, a forged chart line and plain garbage are dropped, not fatal."""
    execution = sb.run_code(
        "import json, os\n"
        "pipe = os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)\n"
        "os.write(pipe, b'[' * 200_000 + b']' * 200_000 + b'\\n')\n"
        f"forged = {{'id': 'guess', 'type': 'result', 'data': {{{MIME!r}: 1}}}}\n"
        "os.write(pipe, json.dumps(forged).encode() + b'\\n')\n"
        "os.write(pipe, b'\\xff garbage\\n')\n"
        "print('after')"
    )
    assert execution.error is None and execution.logs.stdout == ["after\n"] and execution.results == []
    assert sb.run_code("6 * 7").text == "42"


def test_per_execution_envs(sb: Sandbox) -> None:
    read = (
        "import os, subprocess\n"
        "shell = subprocess.run(['sh', '-c', 'echo $A'], capture_output=True, text=True)\n"
        "(os.environ.get('A'), shell.stdout)"
    )
    assert (
        sb.run_code(read, envs={"A": "one 'two' $three"}).text
        == "(\"one 'two' $three\", \"one 'two' $three\\n\")"
    )
    assert sb.run_code(read).text == "(None, '\\n')"  # that run only
    # the sandbox-wide variable from Sandbox.create(envs=) is seen, overridden for one run, restored
    assert sb.run_code("os.environ['GLOBAL']").text == "'sandbox-wide'"
    assert sb.run_code("os.environ['GLOBAL']", envs={"GLOBAL": "mine"}).text == "'mine'"
    assert sb.run_code("os.environ['GLOBAL']", language="python").text == "'sandbox-wide'"
    # a failing cell still gets its variables undone
    failed = sb.run_code("raise ValueError(os.environ['B'])", envs={"B": "boom"})
    assert failed.error is not None and failed.error.value == "boom"
    assert sb.run_code("'B' in os.environ").text == "False"
    with pytest.raises(TimeoutException):  # and an interrupted one's
        sb.run_code("import time; time.sleep(30)", envs={"T": "late"}, timeout=2)
    assert sb.run_code("'T' in os.environ").text == "False"
    ctx = sb.create_code_context(cwd="/tmp")
    assert (
        sb.run_code("import os; os.environ['C'] + os.getcwd()", context=ctx, envs={"C": "c:"}).text
        == "'c:/tmp'"
    )
    assert sb.run_code("os.environ.get('C')", context=ctx).text is None  # None: no main result text


def test_per_execution_envs_in_bash(sb: Sandbox) -> None:
    out = sb.run_code(
        'echo "$A|$GLOBAL"; bash -c \'echo "$A"\'', language="bash", envs={"A": "x y", "GLOBAL": "g"}
    )
    assert "".join(out.logs.stdout) == "x y|g\nx y\n"
    again = sb.run_code('echo "${A-unset}|$GLOBAL"', language="bash")
    assert again.logs.stdout == ["unset|sandbox-wide\n"]
    # an interrupted bash cell (its timeout) has its variables undone too
    with pytest.raises(TimeoutException):
        sb.run_code("sleep 30", language="bash", envs={"A": "late"}, timeout=2)
    assert sb.run_code('echo "${A-unset}"', language="bash").logs.stdout == ["unset\n"]


def test_bad_envs_are_refused(sb: Sandbox) -> None:
    for envs in ({"1BAD": "x"}, {"A=B": "x"}, {"NUL": "a\0b"}, {"BIG": "x" * (200 << 10)}):
        with pytest.raises(SandboxException) as caught:
            sb.run_code("1", envs=envs)
        assert "400" in str(caught.value) and "env" in str(caught.value).lower()
    assert sb.run_code("'1BAD' in __import__('os').environ").text == "False"


def test_stockade_sdk_gets_the_same_chart_and_envs(server: Server, sb: Sandbox) -> None:
    """The same engine features through Stockade's own API and SDK (one sandbox)."""
    from stockade import Sandbox as StockadeSandbox

    own = StockadeSandbox.get(sb.sandbox_id, api_url=server.url, api_key=os.environ["E2B_API_KEY"])
    try:
        execution = own.run_code(PLT + "plt.pie([3, 1], labels=['yes', 'no'])\nplt.show()")
        (result,) = execution.results
        assert result.png and result.chart is not None and result.chart["type"] == "pie"
        assert [(e["label"], round(e["angle"])) for e in result.chart["elements"]] == [
            ("yes", 270),
            ("no", 90),
        ]
        assert own.run_code("import os; os.environ.get('N')", envs={"N": "native"}).text == "'native'"
        assert own.run_code("os.environ.get('N', 'gone')").text == "'gone'"
    finally:
        own.close()  # the handle only: the sandbox is the module's
