"""HTML of a sandbox's page: spec, state and its reason, buttons (fork among them), usage
charts, network policy and egress log, processes, snapshots and the terminal; and the page of
a sandbox that ended (its end record). ``static/detail.js`` keeps the parts
that change (state, charts, processes, egress) up to date from ``/ui/sandboxes/ID/live``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ..models import SandboxEnd
from ..sdk import ProcessInfo, SandboxInfo, TemplateInfo
from .charts import charts
from .pages import ACTIONS, WORKSPACE_ONLY, csrf_field, e, layout, when
from .sessions import Session

#: The newest egress log entries shown (the API keeps more).
EGRESS_SHOWN = 100


def egress_rows(entries: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr class="{e(x.get("verdict"))}"><td>{e(when(x.get("time")))}</td>'
        f"<td>{e(x.get('kind'))}</td><td>{e(x.get('name') or '-')}</td>"
        f"<td>{e(x.get('destination') or '-')}</td><td>{e(x.get('verdict'))}</td>"
        f"<td>{e(x.get('reason') or '')}</td>"
        f"<td>{e(x.get('bytes_out') if x.get('bytes_out') is not None else '-')} / "
        f"{e(x.get('bytes_in') if x.get('bytes_in') is not None else '-')}</td></tr>"
        for x in reversed(entries)
    )  # newest first
    return rows or '<tr><td colspan="7" class="empty">No connection yet.</td></tr>'


def process_rows(session: Session, sandbox_id: str, items: list[ProcessInfo]) -> str:
    rows = []
    for p in items:
        base = f"/ui/sandboxes/{e(sandbox_id)}/processes/{p.pid}"
        follow = "(terminal)" if p.pty else f'<a href="{base}">follow output</a>'
        rows.append(
            f'<tr data-pid="{p.pid}"><td>{p.pid}</td><td>{e(p.tag or "")}</td>'
            f"<td><code>{e((p.cmd or '')[:200])}</code></td><td>{e(p.status or '')}</td>"
            f'<td>{follow} <form method="post" action="{base}/kill" class="inline">'
            f'{csrf_field(session)}<button class="kill">Kill</button></form></td></tr>'
        )
    return "".join(rows) or '<tr><td colspan="5" class="empty">No process.</td></tr>'


def _network(s: SandboxInfo, egress: list[dict[str, Any]]) -> str:
    if s.network == "none":
        return (
            '<h2>Network</h2><p id="network-policy">No network: loopback only (egress is '
            "set when the sandbox is created).</p>"
        )
    policy = s.network
    rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>"
        for label, value in (
            ("allowed out", ", ".join(policy.get("allow_out") or []) or "nothing"),
            ("denied out", ", ".join(policy.get("deny_out") or []) or "-"),
            ("max connections", policy.get("max_connections") or "-"),
            ("bandwidth", f"{policy['bandwidth_mbit']} Mbit/s" if policy.get("bandwidth_mbit") else "-"),
        )
    )
    return f"""<h2>Network</h2><table class="spec" id="network-policy">{rows}</table>
<h3>Egress log <span class="hint">(newest first; everything not allowed is denied)</span></h3>
<table id="egress"><thead><tr><th>time</th><th>kind</th><th>name</th><th>destination</th>
<th>verdict</th><th>why</th><th>bytes out / in</th></tr></thead>
<tbody>{egress_rows(egress)}</tbody></table>"""


def _snapshots(session: Session, s: SandboxInfo, snapshots: list[TemplateInfo], ended: bool = False) -> str:
    rows = "".join(
        f'<tr data-name="{e(t.name)}"><td>{e(t.name)}</td><td>{e(t.created)}</td>'
        f'<td>{t.size_bytes // (1 << 20)} MiB</td><td><form method="post" action="/ui/sandboxes"'
        f' class="inline">{csrf_field(session)}<input type="hidden" name="template" '
        f'value="{e(t.name)}"><input type="hidden" name="tier" value="{e(s.isolation)}">'
        f"<button>New sandbox from it</button></form></td></tr>"
        for t in snapshots
    )
    rows = rows or (
        '<tr><td colspan="4" class="empty">None.</td></tr>'
        if ended
        else '<tr><td colspan="4" class="empty">None yet: "Save as template" makes one.</td></tr>'
    )
    return (
        f'<h2>Snapshots</h2><table id="snapshots"><thead><tr><th>template</th><th>saved</th>'
        f"<th>size</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _spec(s: SandboxInfo) -> dict[str, Any]:
    return {
        "tier": s.isolation,
        "template": s.template,
        "state": s.state,
        "reason": s.reason or "-",
        "why": s.message or "-",
        "persistence": s.persistence,
        "on timeout": s.on_timeout,
        "cpu": f"{s.cpu:g}",
        "memory": f"{s.memory_mb} MB",
        "disk": f"{s.disk_mb} MB",
        "pids": s.pids,
        "created": when(s.created_at),
        "expires": when(s.expires_at),
        "metadata": json.dumps(s.metadata) if s.metadata else "-",
        "volumes": ", ".join(f"{v['volume']} at {v['path']}" for v in s.volumes) or "-",
    }


def _buttons(session: Session, s: SandboxInfo) -> str:
    """The lifecycle buttons the state allows (stop, start and archive: workspaces only),
    fork (count, and whether processes and memory must come along) and save as template."""
    base = f"/ui/sandboxes/{e(s.id)}"
    buttons = "".join(
        f'<form method="post" action="{base}/{a}" class="inline">'
        f'{csrf_field(session)}<button class="{a}" name="action" value="{a}">{a.title()}</button>'
        f"</form>"
        for a, states in ACTIONS.items()
        if s.state in states and (a not in WORKSPACE_ONLY or s.persistence == "workspace")
    )
    fork = (
        ""
        if s.state not in ("running", "paused")
        else (
            f'<form method="post" action="{base}/fork" class="inline" id="fork">{csrf_field(session)}'
            f'<input name="count" type="number" min="1" max="16" value="1" required '
            f'title="copies (1 to 16)" aria-label="copies"><select name="memory" aria-label="what to copy">'
            f'<option value="auto">+ memory if the tier can</option>'
            f'<option value="required">+ memory, required</option>'
            f'<option value="files">files only</option></select><button>Fork</button></form>'
        )
    )
    return f"""<div class="actions">{buttons}
<a class="button" href="{base}/files?path=%2Fhome%2Fuser">Files</a>{fork}
<form method="post" action="{base}/snapshot" class="inline" id="snapshot">
{csrf_field(session)}<input name="name" placeholder="template name" required maxlength="64"
 pattern="[a-z0-9][a-z0-9._-]*" aria-label="template name"><button>Save as template</button>
</form></div>"""


def _copies(forked: tuple[list[str], bool] | None) -> str:
    if not forked:
        return ""
    ids, memory = forked
    links = ", ".join(f'<a href="/ui/sandboxes/{e(i)}">{e(i)}</a>' for i in ids)
    what = (
        "files, processes and memory copied" if memory else "files only: the copies started fresh processes"
    )
    return (
        f'<p id="forked" class="message built" data-memory="{int(memory)}">Forked '
        f"{len(ids)} {'copy' if len(ids) == 1 else 'copies'}: {links} ({what}).</p>"
    )


def sandbox_detail(
    session: Session,
    s: SandboxInfo,
    parts: dict[str, Any],
    snapshots: list[TemplateInfo],
    forked: tuple[list[str], bool] | None,
    message: str = "",
) -> str:
    """A live sandbox's page; ``parts``: its stats, usage, processes and egress log."""
    stats = parts["stats"]
    rows = "".join(
        f'<tr><th>{e(k)}</th><td data-field="{e(k)}">{e(v)}</td></tr>' for k, v in _spec(s).items()
    )
    if stats:
        rows += "".join(
            f'<tr><th>{e(k)}</th><td data-stat="{e(k)}">{e(v)}</td></tr>' for k, v in stats.items()
        )
    terminal = procs = ""
    usage = charts(parts["usage"]) if parts["usage"] or s.state == "running" else ""
    if s.state == "running":
        procs = (
            f'<h2>Processes</h2><table id="processes"><thead><tr><th>pid</th><th>tag</th>'
            f"<th>command</th><th>status</th><th></th></tr></thead>"
            f"<tbody>{process_rows(session, s.id, parts['processes'])}</tbody></table>"
        )
        terminal = (
            f'<h2>Terminal</h2><div id="terminal" data-sandbox="{e(s.id)}" '
            f'data-csrf="{e(session.csrf)}"></div>'
            f'<p class="hint" id="terminal-status">connecting...</p>'
        )
    head = '<script src="/ui/static/detail.js" defer></script>' + (
        '<link rel="stylesheet" href="/ui/static/vendor/xterm.css">'
        '<script src="/ui/static/vendor/xterm.js" defer></script>'
        '<script src="/ui/static/vendor/addon-fit.js" defer></script>'
        '<script src="/ui/static/terminal.js" defer></script>'
        if terminal
        else ""
    )
    body = f"""<p><a href="/ui/">&larr; all sandboxes</a></p><h1>Sandbox {e(s.id)}</h1>
<p id="ended" role="alert" hidden></p>{_copies(forked)}
<div id="live" data-sandbox="{e(s.id)}" data-state="{e(s.state)}" data-csrf="{e(session.csrf)}"></div>
{_buttons(session, s)}
<table class="spec">{rows}</table>{usage}{terminal}{procs}{_network(s, parts["egress"])}
{_snapshots(session, s, snapshots)}
<p class="hint">This page updates itself: at once when the sandbox changes state or ends
(the server's event stream), its usage, processes and egress log every 2 s.</p>"""
    return layout(f"Sandbox {s.id}", body, session, message=message, head=head)


def ended(session: Session, end: SandboxEnd, snapshots: list[TemplateInfo], message: str = "") -> str:
    """The page of a sandbox that ended: why and when, and what it was (its end record)."""
    s = end.sandbox
    spec = {
        **_spec(s),
        "state": "ended",
        "reason": end.reason,
        "why": end.message,
        "ended": when(end.ended_at),
        "expires": "-",
    }
    rows = "".join(f'<tr><th>{e(k)}</th><td data-field="{e(k)}">{e(v)}</td></tr>' for k, v in spec.items())
    body = f"""<p><a href="/ui/">&larr; all sandboxes</a></p><h1>Sandbox {e(s.id)}</h1>
<p id="ended" role="alert" data-reason="{e(end.reason)}">This sandbox ended
{e(when(end.ended_at))}: {e(end.message)} ({e(end.reason)}).</p>
<table class="spec">{rows}</table>{_snapshots(session, s, snapshots, ended=True)}
<p class="hint">What is kept of an ended sandbox (its end record) goes after a while
(by default a day, or after 1,000 newer ends).</p>"""
    return layout(f"Sandbox {s.id} (ended)", body, session, message=message)


def follow(session: Session, sandbox_id: str, pid: int, hole: str) -> str:
    """The page a process's output streams into (at ``hole``)."""
    back = f"/ui/sandboxes/{quote(sandbox_id)}"
    body = (
        f'<p><a href="{back}">&larr; sandbox {e(sandbox_id)}</a></p>'
        f'<h1>Process {pid}</h1><p class="hint">Its output from now on, as it comes (the '
        f'sandbox keeps no earlier output).</p><pre class="file" id="output">{hole}'
    )
    return layout(f"Process {pid}", body, session)
