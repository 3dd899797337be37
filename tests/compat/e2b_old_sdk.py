"""Run by the interpreter of a virtual environment with an older E2B SDK generation (see
test_e2b.py::test_older_sdk_generation): the same calls, through its v1 endpoints and its own
HTTP stack. Prints "old sdk ok" when every assertion held."""

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox

sb = Sandbox.create(metadata={"gen": "old"})
try:
    r = sb.commands.run("echo old-sdk; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("old-sdk\n", "err\n", 0), r
    h = sb.commands.run("sleep 0.3; echo bg", background=True)
    assert h.wait().stdout == "bg\n"
    sb.files.write("/home/user/o.txt", "old")
    assert sb.files.read("/home/user/o.txt") == "old"
    assert [e.name for e in sb.files.list("/home/user") if e.name == "o.txt"] == ["o.txt"]
    assert sb.files.exists("/home/user/o.txt")
    assert sb.pause() is True
    again = Sandbox.connect(sb.sandbox_id)
    assert again.files.read("/home/user/o.txt") == "old"
    ids = [s.sandbox_id for s in Sandbox.list().next_items()]
    assert sb.sandbox_id in ids, ids
finally:
    assert sb.kill() is True
with CodeSandbox.create() as ci:
    ex = ci.run_code("21 * 2")
    assert ex.text == "42", ex
    assert ci.run_code("1/0").error.name == "ZeroDivisionError"
    bars = ci.run_code("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.show()")
    chart = bars.results[0].chart
    assert chart.type == "bar" and [(e.label, e.value) for e in chart.elements] == [("a", 1), ("b", 2)]
    assert ci.run_code("import os; os.environ['X']", envs={"X": "old"}).text == "'old'"
    assert ci.run_code("'X' in os.environ").text == "False"
print("old sdk ok")
