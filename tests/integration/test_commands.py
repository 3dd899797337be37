"""Commands: output, exit codes, users, streaming, background processes, timeouts."""

from __future__ import annotations

import time

import pytest

from stockade import CommandExitError, CommandTimeout, Sandbox

from conftest import ALL_TIERS


@pytest.fixture(params=ALL_TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    """This behaviour is the same on every tier, the microVM included."""
    return str(request.param)


def test_run_returns_stdout_and_exit_code(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("python3 -c 'print(6*7)'")
    assert r.stdout == "42\n" and r.exit_code == 0 and r.stderr == ""


def test_stderr_is_separate_and_exit_code_kept(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("echo out; echo err >&2; exit 7")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 7)


def test_check_raises_command_exit_error(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitError) as info:
        sandbox.commands.run("echo nope >&2; exit 3", check=True)
    assert info.value.exit_code == 3 and info.value.stderr == "nope\n"


def test_output_order_is_kept(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("seq 1 20000")
    assert r.stdout.split() == [str(i) for i in range(1, 20001)]


def test_output_is_binary_safe(sandbox: Sandbox) -> None:
    r = sandbox.commands.run(["python3", "-c", "import sys; sys.stdout.buffer.write(bytes(range(256)) * 3)"])
    assert r.stdout_bytes == bytes(range(256)) * 3


def test_default_user_is_unprivileged_and_root_on_request(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("id -u; id -un; echo $HOME; pwd")
    assert r.stdout.split() == ["1000", "user", "/home/user", "/home/user"]
    assert sandbox.commands.run("id -u", user="root").stdout == "0\n"


def test_env_and_cwd(make_sandbox, tier: str) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier, envs={"A": "from-sandbox", "B": "b"})
    r = sb.commands.run("echo $A $B; pwd", envs={"B": "from-command"}, cwd="/tmp")
    assert r.stdout == "from-sandbox from-command\n/tmp\n"


def test_streaming_callbacks_see_output_as_it_comes(sandbox: Sandbox) -> None:
    seen: list[tuple[float, str]] = []
    h = sandbox.commands.run(
        "for i in 1 2 3; do echo $i; sleep 0.5; done",
        background=True,
        on_stdout=lambda text: seen.append((time.monotonic(), text)),
    )
    result = h.wait()
    assert result.stdout == "1\n2\n3\n"
    assert "".join(t for _, t in seen) == "1\n2\n3\n"
    assert seen[-1][0] - seen[0][0] > 0.7, "output arrived all at once, not streamed"


def test_background_process_list_stdin_and_kill(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("cat", background=True, stdin=True, timeout=None)
    assert any(p.pid == h.pid for p in sandbox.commands.list())
    h.send_stdin("hello\n")
    h.close_stdin()
    assert h.wait().stdout == "hello\n"
    sleeper = sandbox.commands.run("sleep 600", background=True, timeout=None)
    assert sandbox.commands.kill(sleeper.pid) is True
    result = sleeper.wait()
    assert result.status == "killed" and result.exit_code == 137
    assert sandbox.commands.kill(sleeper.pid) is False


def test_reconnect_to_a_running_process(sandbox: Sandbox) -> None:
    h = sandbox.commands.run("sleep 1; echo late", background=True, timeout=None)
    h.disconnect()
    again = sandbox.commands.connect(h.pid)
    assert again.wait().stdout == "late\n"


def test_command_timeout_kills_and_raises(sandbox: Sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        sandbox.commands.run("sleep 60", timeout=1)
    assert time.monotonic() - start < 10
    assert sandbox.commands.run("echo still-usable").stdout == "still-usable\n"


def test_zombies_are_reaped(sandbox: Sandbox) -> None:
    sandbox.commands.run("for i in $(seq 20); do (sleep 0.1 &) ; done; sleep 1")
    r = sandbox.commands.run("ps -eo stat= | grep -c '^Z' || true")
    assert r.stdout.strip() == "0"


def test_hostname_is_the_sandbox_id_and_tmp_is_private(sandbox: Sandbox) -> None:
    assert sandbox.commands.run("hostname").stdout.strip() == sandbox.id
    assert "tmpfs" in sandbox.commands.run("stat -f -c %T /tmp").stdout


def test_no_network_interface_but_loopback(sandbox: Sandbox) -> None:
    lines = sandbox.commands.run("cat /proc/net/dev").stdout.splitlines()[2:]
    interfaces = {line.split(":")[0].strip() for line in lines}
    assert interfaces <= {"lo"}, f"unexpected interfaces: {interfaces}"


def test_user_commands_cannot_regain_root(sandbox: Sandbox) -> None:
    status = sandbox.commands.run("grep -E '^(Uid|Gid|Groups|CapEff|CapPrm):' /proc/self/status")
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status.stdout.splitlines()}
    assert fields["Uid"] == ["1000"] * 4 and fields["Gid"] == ["1000"] * 4
    assert fields["Groups"] == ["1000"]
    assert int(fields["CapEff"][0], 16) == 0 and int(fields["CapPrm"][0], 16) == 0
    attempt = sandbox.commands.run(["python3", "-c", "import os; os.setresuid(0, 0, 0)"])
    assert attempt.exit_code != 0 and "PermissionError" in attempt.stderr
