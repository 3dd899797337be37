"""HTML of a sandbox's page: spec, state and its reason, buttons, usage charts, network policy
and egress log, processes, snapshots and the terminal. ``static/detail.js`` keeps the parts
that change (state, charts, processes, egress) up to date from ``/ui/sandboxes/ID/live``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ..sdk import ProcessInfo, SandboxInfo, TemplateInfo
from .pages import ACTIONS, csrf_field, e, layout, when
from .sessions import Session

#: The newest egress log entries shown (the API keeps more).
EGRESS_SHOWN = 100
CHARTS = (("memory", "memory (MiB)"), ("cpu", "CPU (% of one core)"), ("pids", "processes"))


def egress_rows(entries: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr class="{e(x.get("verdict"))}"><td>{e(when(x.get("time")))}</td>'
        f'<td>{e(x.get("kind"))}</td><td>{e(x.get("name") or "-")}</td>'
        f'<td>{e(x.get("destination") or "-")}</td><td>{e(x.get("verdict"))}</td>'
        f'<td>{e(x.get("reason") or "")}</td>'
        f'<td>{e(x.get("bytes_out") if x.get("bytes_out") is not None else "-")} / '
        f'{e(x.get("bytes_in") if x.get("bytes_in") is not None else "-")}</td></tr>'
        for x in reversed(entries))  # newest first
    return rows or '<tr><td colspan="7" class="empty">No connection yet.</td></tr>'


def process_rows(session: Session, sandbox_id: str, items: list[ProcessInfo]) -> str:
    rows = []
    for p in items:
        base = f"/ui/sandboxes/{e(sandbox_id)}/processes/{p.pid}"
        follow = ("(terminal)" if p.pty else f'<a href="{base}">follow output</a>')
        rows.append(f'<tr data-pid="{p.pid}"><td>{p.pid}</td><td>{e(p.tag or "")}</td>'
                    f'<td><code>{e((p.cmd or "")[:200])}</code></td><td>{e(p.status or "")}</td>'
                    f'<td>{follow} <form method="post" action="{base}/kill" class="inline">'
                    f'{csrf_field(session)}<button class="kill">Kill</button></form></td></tr>')
    return "".join(rows) or '<tr><td colspan="5" class="empty">No process.</td></tr>'


def _network(s: SandboxInfo, egress: list[dict[str, Any]]) -> str:
    if s.network == "none":
        return ('<h2>Network</h2><p id="network-policy">No network: loopback only (egress is '
                'set when the sandbox is created).</p>')
    policy = s.network
    rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in (
            ("allowed out", ", ".join(policy.get("allow_out") or []) or "nothing"),
            ("denied out", ", ".join(policy.get("deny_out") or []) or "-"),
            ("max connections", policy.get("max_connections") or "-"),
            ("bandwidth", f"{policy['bandwidth_mbit']} Mbit/s" if policy.get("bandwidth_mbit")
             else "-")))
    return f"""<h2>Network</h2><table class="spec" id="network-policy">{rows}</table>
<h3>Egress log <span class="hint">(newest first; everything not allowed is denied)</span></h3>
<table id="egress"><thead><tr><th>time</th><th>kind</th><th>name</th><th>destination</th>
<th>verdict</th><th>why</th><th>bytes out / in</th></tr></thead>
<tbody>{egress_rows(egress)}</tbody></table>"""


def _snapshots(session: Session, s: SandboxInfo, snapshots: list[TemplateInfo]) -> str:
    rows = "".join(
        f'<tr data-name="{e(t.name)}"><td>{e(t.name)}</td><td>{e(t.created)}</td>'
        f'<td>{t.size_bytes // (1 << 20)} MiB</td><td><form method="post" action="/ui/sandboxes"'
        f' class="inline">{csrf_field(session)}<input type="hidden" name="template" '
        f'value="{e(t.name)}"><input type="hidden" name="tier" value="{e(s.isolation)}">'
        f'<button>New sandbox from it</button></form></td></tr>' for t in snapshots)
    rows = rows or '<tr><td colspan="4" class="empty">None yet: "Save as template" makes one.</td></tr>'
    return (f'<h2>Snapshots</h2><table id="snapshots"><thead><tr><th>template</th><th>saved</th>'
            f'<th>size</th><th></th></tr></thead><tbody>{rows}</tbody></table>')


def sandbox_detail(session: Session, s: SandboxInfo, stats: dict[str, Any] | None,
                   processes: list[ProcessInfo], egress: list[dict[str, Any]],
                   snapshots: list[TemplateInfo], message: str = "") -> str:
    spec = {"tier": s.isolation, "template": s.template, "state": s.state,
            "reason": s.reason or "-",
            "persistence": s.persistence, "on timeout": s.on_timeout,
            "cpu": f"{s.cpu:g}", "memory": f"{s.memory_mb} MB", "disk": f"{s.disk_mb} MB",
            "pids": s.pids, "created": when(s.created_at), "expires": when(s.expires_at),
            "metadata": json.dumps(s.metadata) if s.metadata else "-",
            "volumes": ", ".join(f"{v['volume']} at {v['path']}" for v in s.volumes) or "-"}
    rows = "".join(f'<tr><th>{e(k)}</th><td data-field="{e(k)}">{e(v)}</td></tr>'
                   for k, v in spec.items())
    if stats:
        rows += "".join(f'<tr><th>{e(k)}</th><td data-stat="{e(k)}">{e(v)}</td></tr>'
                        for k, v in stats.items())
    buttons = "".join(
        f'<form method="post" action="/ui/sandboxes/{e(s.id)}/{a}" class="inline">'
        f'{csrf_field(session)}<button class="{a}" name="action" value="{a}">{a.title()}</button>'
        f'</form>' for a, states in ACTIONS.items()
        if s.state in states and (a not in ("stop", "start") or s.persistence == "workspace"))
    terminal = charts = procs = ""
    if s.state == "running":
        charts = '<h2>Usage</h2><div id="charts">' + "".join(
            f'<figure><figcaption>{label}</figcaption><svg id="chart-{name}" viewBox="0 0 300 80" '
            f'preserveAspectRatio="none"></svg></figure>' for name, label in CHARTS) + "</div>"
        procs = (f'<h2>Processes</h2><table id="processes"><thead><tr><th>pid</th><th>tag</th>'
                 f'<th>command</th><th>status</th><th></th></tr></thead>'
                 f'<tbody>{process_rows(session, s.id, processes)}</tbody></table>')
        terminal = (f'<h2>Terminal</h2><div id="terminal" data-sandbox="{e(s.id)}" '
                    f'data-csrf="{e(session.csrf)}"></div>'
                    f'<p class="hint" id="terminal-status">connecting...</p>')
    head = ('<script src="/ui/static/detail.js" defer></script>' + (
        '<link rel="stylesheet" href="/ui/static/vendor/xterm.css">'
        '<script src="/ui/static/vendor/xterm.js" defer></script>'
        '<script src="/ui/static/vendor/addon-fit.js" defer></script>'
        '<script src="/ui/static/terminal.js" defer></script>' if terminal else ""))
    body = f"""<p><a href="/ui/">&larr; all sandboxes</a></p><h1>Sandbox {e(s.id)}</h1>
<p id="ended" role="alert" hidden></p>
<div id="live" data-sandbox="{e(s.id)}" data-state="{e(s.state)}" data-csrf="{e(session.csrf)}"></div>
<div class="actions">{buttons}
<a class="button" href="/ui/sandboxes/{e(s.id)}/files?path=%2Fhome%2Fuser">Files</a>
<form method="post" action="/ui/sandboxes/{e(s.id)}/snapshot" class="inline" id="snapshot">
{csrf_field(session)}<input name="name" placeholder="template name" required maxlength="64"
 pattern="[a-z0-9][a-z0-9._-]*" aria-label="template name"><button>Save as template</button>
</form></div>
<table class="spec">{rows}</table>{charts}{terminal}{procs}{_network(s, egress)}
{_snapshots(session, s, snapshots)}
<p class="hint">This page updates itself every 2 s.</p>"""
    return layout(f"Sandbox {s.id}", body, session, message=message, head=head)


def follow(session: Session, sandbox_id: str, pid: int, hole: str) -> str:
    """The page a process's output streams into (at ``hole``)."""
    back = f"/ui/sandboxes/{quote(sandbox_id)}"
    body = (f'<p><a href="{back}">&larr; sandbox {e(sandbox_id)}</a></p>'
            f'<h1>Process {pid}</h1><p class="hint">Its output from now on, as it comes (the '
            f'sandbox keeps no earlier output).</p><pre class="file" id="output">{hole}')
    return layout(f"Process {pid}", body, session)
