"""Secrets that never enter the sandbox: stored encrypted, injected by the egress proxy.

A remote-mode server (API keys, tenants, audit trail) whose sandbox uplink is the "outside
world" namespace of test_egress.py: HTTPS servers for ``allowed.test`` and ``other.test``
that log the ``Authorization`` header and the body of every request they receive, with a
certificate the daemon trusts as the operator's CA bundle (so the proxy's re-originated TLS is
really verified). The secret is bound to ``allowed.test`` only. What arrived is judged by the
world's log; what leaked is judged by searching the sandbox (env, /proc, memory), the data
directory on disk, the server's log, the egress log and the audit trail for the value.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from stockade import Sandbox
from stockade.engine.hostcheck import find_leaks

from tests.conftest import ALL_TIERS
from tests.integration.server_harness import Server
from tests.integration.test_egress import World, world  # noqa: F401 - the module's world

pytestmark = pytest.mark.root

VALUE = "sk-live-" + secrets.token_hex(20)  # the secret: must reach allowed.test and nothing else
POLICY = {"allow_out": ["allowed.test", "other.test"]}


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[Server]:  # noqa: F811
    data = Path(tempfile.mkdtemp(prefix="stockade-secrets-", dir="/var/tmp"))
    s = Server(
        data,
        STOCKADE_NET_UPLINK_NETNS=f"/run/netns/{world.name}",
        STOCKADE_NET_DNS=world.inside,
        STOCKADE_CA_BUNDLE=str(world.cert),
    ).start()
    try:
        yield s
    finally:
        s.kill_all_sandboxes()
        s.stop()
        leaks = find_leaks(data)
        subprocess.run(["rm", "-rf", str(data)], check=False)
    assert not leaks, f"the server left things behind: {leaks}"


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """Two tenants; ``a`` owns the secret."""
    a, b = server.new_key("sec-a"), server.new_key("sec-b")
    with server.client(a) as c:
        r = c.post("/secrets", json={"name": "API_KEY", "value": VALUE, "hosts": ["allowed.test"]})
        assert r.status_code == 201, r.text
        r = c.post(
            "/secrets",
            json={"name": "BODY_KEY", "value": VALUE + "-b", "hosts": ["allowed.test"], "inject_body": True},
        )
        assert r.status_code == 201, r.text
    return {"a": a, "b": b}


@pytest.fixture
def make(server: Server, keys: dict[str, str]) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def create(**kwargs: Any) -> Sandbox:
        sb = Sandbox.create(api_url=server.url, api_key=keys["a"], timeout=180, **kwargs)
        made.append(sb)
        return sb

    yield create
    leaks = []
    for sb in made:
        sb.kill()
        leaks += find_leaks(server.data_dir, sb.id)
    assert not leaks, f"killed sandboxes left things behind: {leaks}"


# -- what the agent's code runs ----------------------------------------------------------------
CALLS = r"""
import json, os, socket, ssl, sys, urllib.request
key = os.environ["API_KEY"]
out = {"env": key}

def call(url, body=None, auth=None):
    req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {auth or key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except Exception as exc:
        return f"FAIL {type(exc).__name__} {exc}"[:200]

out["bound"] = call("https://allowed.test/bound")
out["unbound"] = call("https://other.test/unbound")
out["plain"] = call("http://allowed.test/plain")
out["body"] = call("https://allowed.test/body", body=("token=" + os.environ["BODY_KEY"]).encode())
out["again"] = call("https://allowed.test/again")  # a second connection: same result

# Domain fronting inside the intercepted TLS: SNI allowed.test, Host other.test.
try:
    ctx = ssl.create_default_context()
    s = ctx.wrap_socket(socket.create_connection(("allowed.test", 443), timeout=10),
                        server_hostname="allowed.test")
    s.sendall(f"GET /fronted HTTP/1.1\r\nHost: other.test\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    out["fronted"] = s.recv(100).decode(errors="replace") or "closed"
except Exception as exc:
    out["fronted"] = f"FAIL {type(exc).__name__}"
print(json.dumps(out))
"""

# Everything the sandbox can read about itself: env, every process's environ and cmdline, and
# every readable memory region of every process it may read. A child first makes the injected
# call itself and stays alive, so the memory of the very process that used the secret is read.
SEARCH = r"""
import json, os, re, sys, urllib.request
(r, w), (r2, w2) = os.pipe(), os.pipe()
child = os.fork()  # before the needle exists: the child's memory must not hold a copy
if child == 0:
    req = urllib.request.Request("https://allowed.test/mem",
                                 headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
    status = urllib.request.urlopen(req, timeout=10).status
    os.write(w, str(status).encode())
    os.read(r2, 1)  # until the parent is done
    os._exit(0)
status = os.read(r, 10).decode()
needle = bytes.fromhex(sys.argv[1])  # hex: the agent that starts us never holds the needle
found, regions = [], {}
if needle in b"".join(k.encode() + v.encode() for k, v in os.environ.items()):
    found.append("env")
for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
    for name in ("environ", "cmdline"):
        try:
            if needle in open(f"/proc/{pid}/{name}", "rb").read():
                found.append(f"{pid}/{name}")
        except OSError:
            pass
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", 0)
    except OSError:
        continue
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
        if not m or "[vvar]" in line or "[vsyscall]" in line:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        try:
            mem.seek(start)
            data = mem.read(min(end - start, 256 << 20))
        except (OSError, OverflowError, ValueError):
            continue
        regions[pid] = regions.get(pid, 0) + 1
        if needle in data:
            found.append(f"{pid}/mem {line.split()[-1]}")
os.write(w2, b"x")
os.waitpid(child, 0)
print(json.dumps({"found": found, "child": regions.get(str(child), 0), "status": status}))
"""


def world_requests(world: World, path: str) -> list[dict[str, Any]]:  # noqa: F811
    return world.seen("http", path=path)


@pytest.mark.parametrize("tier", ALL_TIERS)
def test_secret_reaches_only_its_host(
    tier: str,
    make: Callable[..., Sandbox],
    world: World,  # noqa: F811
    server: Server,
    keys: dict[str, str],
) -> None:
    """The agent's code calls the bound host with the placeholder; the host receives the
    value; any other host (or the same over plain HTTP) receives the placeholder; and the
    value is nowhere the sandbox can look, nor in any log or file of Stockade's."""
    sb = make(isolation=tier, network=POLICY, secrets=["API_KEY", "BODY_KEY"])
    assert sorted(sb.info.secrets) == ["API_KEY", "BODY_KEY"]
    r = sb.commands.run(["python3", "-c", CALLS], timeout=120)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    placeholder = out["env"]
    assert placeholder.startswith("STOCKADE_SECRET_") and VALUE not in placeholder
    assert sb.info.envs["API_KEY"] == placeholder  # what the API shows is the placeholder
    assert out["bound"] == 200 and out["unbound"] == 200 and out["plain"] == 200, out
    assert out["body"] == 200 and out["again"] == 200, out

    def arrived(path: str) -> dict[str, Any]:
        got = [
            e for e in world_requests(world, path) if placeholder in json.dumps(e) or VALUE in json.dumps(e)
        ]
        assert len(got) >= 1, (path, world.events[-10:])
        return got[-1]

    bound = arrived("/bound")
    assert bound["tls"] and bound["sni"] == "allowed.test"
    assert bound["auth"] == f"Bearer {VALUE}"  # the real value, on the wire to the bound host
    assert arrived("/again")["auth"] == f"Bearer {VALUE}"
    unbound = arrived("/unbound")
    assert unbound["host"] == "other.test" and unbound["auth"] == f"Bearer {placeholder}"
    plain = arrived("/plain")
    assert not plain["tls"] and plain["auth"] == f"Bearer {placeholder}"  # never in clear text
    body = arrived("/body")
    body_placeholder = sb.info.envs["BODY_KEY"]
    assert body["body"] == f"token={VALUE}-b"  # inject_body: the body carries the value
    assert body["auth"] == f"Bearer {VALUE}"  # and the header secret still works
    assert body_placeholder not in body["body"]
    # Fronting inside the intercepted TLS reaches nobody.
    assert not world_requests(world, "/fronted"), out["fronted"]
    assert not out["fronted"].startswith("HTTP/1.1 200"), out["fronted"]

    # The sandbox cannot find the value: env, /proc/*/environ and cmdline, the memory of the
    # process that made an injected call.
    for needle in (VALUE, VALUE + "-b"):
        r = sb.commands.run(["python3", "-c", SEARCH, needle.encode().hex()], timeout=120)
        assert r.exit_code == 0, r.stderr
        searched = json.loads(r.stdout)
        assert searched["status"] == "200" and searched["found"] == [], searched
        assert searched["child"] > 10, searched  # it really read the caller's memory
    # ... nor in its files, nor anywhere on the host's data directory (the sandbox's upper
    # layer included) in clear text: only the encrypted store holds it.
    hit = subprocess.run(["grep", "-rlaF", VALUE, str(server.data_dir)], capture_output=True, text=True)
    assert hit.stdout == "", f"the value is in clear text in {hit.stdout}"
    hit = subprocess.run(
        ["grep", "-rlaF", placeholder, str(server.data_dir / "private")], capture_output=True, text=True
    )
    assert hit.stdout == ""  # the store has no reason to know the placeholder either

    # The egress log says what was injected by name only.
    entries = sb.egress_log()
    assert VALUE not in json.dumps(entries)
    injected = [e for e in entries if e.get("intercepted") and e.get("name") == "allowed.test"]
    assert injected and all(e["verdict"] == "allowed" for e in injected[:3])
    assert "API_KEY" in injected[0]["secrets"] and "injected API_KEY" in injected[0]["reason"]
    passed = [e for e in entries if e.get("name") == "other.test"]
    assert passed and not any(e.get("intercepted") for e in passed)
    fronted = [e for e in entries if e["verdict"] == "denied" and e.get("intercepted")]
    assert fronted and "names other.test in Host" in fronted[-1]["reason"]

    with server.admin() as c:
        audit = c.get("/audit", params={"limit": 1000})
        assert audit.status_code == 200, audit.text
    assert VALUE not in audit.text and "secret.set" in audit.text
    assert VALUE not in server.log_tail() and VALUE not in (server.data_dir / "server.log").read_text(
        errors="replace"
    )


def test_store_is_encrypted_and_private(server: Server, keys: dict[str, str]) -> None:
    """The key file and the store are 0600; the store holds ciphertext, not the value."""
    private = server.data_dir / "private"
    for path in [private / "secrets.key", private / "ca.key", *(private / "secrets").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    store = b"".join(p.read_bytes() for p in (private / "secrets").iterdir())
    assert b"API_KEY" in store and VALUE.encode() not in store


def test_list_never_shows_a_value(server: Server, keys: dict[str, str]) -> None:
    with server.client(keys["a"]) as c:
        page = c.get("/secrets")
        one = c.get("/secrets/API_KEY")
    assert page.status_code == 200 and one.status_code == 200
    items = {i["name"]: i for i in page.json()["items"]}
    assert items["API_KEY"]["hosts"] == ["allowed.test"]
    assert items["API_KEY"]["created_at"] <= items["API_KEY"]["updated_at"]
    assert "value" not in items["API_KEY"] and VALUE not in page.text + one.text


def test_another_tenant_cannot_see_or_use_it(server: Server, keys: dict[str, str]) -> None:
    with server.client(keys["b"]) as c:
        assert c.get("/secrets").json()["items"] == []
        assert c.get("/secrets/API_KEY").status_code == 404
        assert c.delete("/secrets/API_KEY").status_code == 404
        r = c.post("/sandboxes", json={"network": POLICY, "secrets": ["API_KEY"]})
        assert r.status_code == 400 and "no secret 'API_KEY'" in r.text, r.text
        # B's own secret of the same name is B's: A's is untouched.
        assert (
            c.post(
                "/secrets", json={"name": "API_KEY", "value": "b-value", "hosts": ["other.test"]}
            ).status_code
            == 201
        )
        assert c.delete("/secrets/API_KEY").status_code == 204
    with server.client(keys["a"]) as c:
        assert c.get("/secrets/API_KEY").json()["hosts"] == ["allowed.test"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"name": "-bad", "value": "v", "hosts": ["a.test"]}, "name"),
        ({"name": "a b", "value": "v", "hosts": ["a.test"]}, "name"),
        ({"name": "OK", "value": "v", "hosts": []}, "hosts"),
        ({"name": "OK", "value": "v", "hosts": ["10.0.0.1"]}, "IP addresses"),
        ({"name": "OK", "value": "v", "hosts": ["bad host"]}, "not a host name"),
        ({"name": "OK", "value": "a\r\nX-Injected: 1", "hosts": ["a.test"]}, "line breaks"),
        ({"name": "OK", "value": "", "hosts": ["a.test"]}, "value"),
        ({"name": "OK", "value": "x" * 9000, "hosts": ["a.test"]}, "value"),
        ({"name": "OK", "value": "v", "hosts": ["a.test"], "extra": 1}, "extra"),
        ({"name": "OK", "hosts": ["a.test"]}, "value"),
    ],
)
def test_garbage_secret_requests(
    server: Server, keys: dict[str, str], body: dict[str, Any], fragment: str
) -> None:
    with server.client(keys["a"]) as c:
        r = c.post("/secrets", json=body)
    assert r.status_code in (400, 422), r.text
    assert fragment in r.text and "a\r\nX-Injected" not in r.text


def test_garbage_sandbox_requests(server: Server, keys: dict[str, str]) -> None:
    with server.client(keys["a"]) as c:
        cases = [
            ({"secrets": ["API_KEY"]}, "network policy"),
            ({"network": {"allow_out": ["other.test"]}, "secrets": ["API_KEY"]}, "does not allow"),
            ({"network": POLICY, "secrets": ["API_KEY", "API_KEY"]}, "twice"),
            ({"network": POLICY, "secrets": ["no such"]}, "secrets"),
            ({"network": POLICY, "secrets": {"1X": "API_KEY"}}, "secrets"),
            ({"network": POLICY, "secrets": "API_KEY"}, "secrets"),
        ]
        for body, fragment in cases:
            r = c.post("/sandboxes", json=body)
            assert r.status_code in (400, 422) and fragment in r.text, (body, r.text)
        # Daytona's form: {ENV_VAR: secret name}.
        r = c.post("/sandboxes", json={"network": POLICY, "secrets": {"OPENAI_API_KEY": "API_KEY"}})
        assert r.status_code == 201, r.text
        assert r.json()["secrets"] == ["API_KEY"]
        assert r.json()["envs"]["OPENAI_API_KEY"].startswith("STOCKADE_SECRET_")
        assert VALUE not in r.text
        assert c.delete(f"/sandboxes/{r.json()['id']}").status_code == 204
        r = c.post("/secrets", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code in (400, 422), r.text
        assert c.get("/secrets/nope").status_code == 404
    assert httpx.get(server.url + "/secrets").status_code == 401


def test_cli_and_sdk(server: Server, keys: dict[str, str]) -> None:
    """`stockade secret set/ls/rm` read the value from stdin and never print it."""
    from tests.integration.server_harness import STOCKADE

    env = {**os.environ, "STOCKADE_API_URL": server.url, "STOCKADE_API_KEY": keys["a"]}
    value = "cli-" + secrets.token_hex(8)
    r = subprocess.run(
        [STOCKADE, "secret", "set", "CLI_KEY", "--host", "*.example.test"],
        input=value,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run([STOCKADE, "secret", "ls"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "CLI_KEY" in r.stdout and value not in r.stdout
    from stockade import Secret

    info = Secret.get("CLI_KEY", api_url=server.url, api_key=keys["a"])
    assert info.hosts == ["*.example.test"]
    r = subprocess.run([STOCKADE, "secret", "rm", "CLI_KEY"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "CLI_KEY" not in [s.name for s in Secret.list(api_url=server.url, api_key=keys["a"])]


RESTART_CALL = r"""
import os, urllib.request
req = urllib.request.Request("https://allowed.test/restart",
                             headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
print(urllib.request.urlopen(req, timeout=10).status)
"""


def test_secrets_survive_a_server_restart(server: Server, make: Callable[..., Sandbox], world: World) -> None:  # noqa: F811
    """A restarted server re-attaches a live sandbox with its placeholders, and the proxy
    still injects the value (read again from the store under the key file). Last in the
    module: it restarts the module's server."""
    sb = make(isolation="container", network=POLICY, secrets=["API_KEY"])
    placeholder = sb.info.envs["API_KEY"]
    server.stop()
    server.start()
    r = sb.commands.run(["python3", "-c", RESTART_CALL], timeout=120)
    assert r.exit_code == 0 and r.stdout.strip() == "200", r.stderr
    got = world_requests(world, "/restart")
    assert got and got[-1]["auth"] == f"Bearer {VALUE}", got
    assert placeholder not in json.dumps(got)
