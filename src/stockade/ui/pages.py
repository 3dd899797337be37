"""HTML for the dashboard's pages: plain functions from data to escaped markup."""

from __future__ import annotations

import datetime
import json
from html import escape
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from ..sdk import AsyncVolume, EntryInfo, SandboxInfo, TemplateInfo
from .sessions import Session

STATES = ("running", "paused", "stopped", "archived")
TIERS = ("container", "gvisor", "microvm")
#: How the engine marks a template saved from a sandbox (TemplateInfo.source).
SNAPSHOT_OF = "snapshot of sandbox "
#: Lifecycle buttons, and the states in which each makes sense.
ACTIONS = {
    "pause": ("running",),
    "resume": ("paused",),
    "stop": ("running", "paused"),
    "start": ("stopped", "archived"),
    "archive": ("stopped",),
    "kill": STATES,
}
#: The actions that only a workspace (persistence="workspace") has.
WORKSPACE_ONLY = ("stop", "start", "archive")


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def layout(
    title: str, body: str, session: Session | None = None, *, message: str = "", head: str = ""
) -> str:
    who = ""
    if session is not None:
        scope = "admin: every tenant" if session.admin else f"tenant {e(session.tenant)}"
        if session.local:
            scope = "local daemon"
        who = (
            '<a href="/ui/">Sandboxes</a><a href="/ui/templates">Templates</a>'
            '<a href="/ui/volumes">Volumes</a>'
            + (
                ""
                if session.local
                else '<a href="/ui/keys">Keys</a>'
                + ('<a href="/ui/tenants">Tenants</a>' if session.admin else "")
                + '<a href="/ui/audit">Audit</a>'
            )
            + f'<span class="who">{scope}</span>'
            f'<form method="post" action="/ui/logout" class="inline">{csrf_field(session)}'
            f"<button>Sign out</button></form>"
        )
    failed = " failed" if getattr(message, "failed", False) else ""
    note = f'<p class="message{failed}" role="alert">{e(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} - Stockade</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/ui/static/app.css">{head}</head>
<body><header><a href="/ui/" class="brand">Stockade</a><nav>{who}</nav></header>
<main>{note}{body}</main></body></html>"""


def csrf_field(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'


def login(message: str = "") -> str:
    body = """<h1>Sign in</h1>
<form method="post" action="/ui/login" class="card">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" required maxlength="512"
 placeholder="sk_...">
<button type="submit">Sign in</button>
<p class="hint">An admin key sees every tenant; a tenant key (<code>stockade keys create</code>)
sees its own sandboxes. No key at hand? On the server's machine, <code>stockade dashboard</code>
prints a sign-in link.</p></form>"""
    return layout("Sign in", body, message=message)


def confirm_link(token: str, who: Session) -> str:
    """The page a sign-in link opens: one button, so that following a link alone (a preview,
    a prefetch, another site) signs nobody in."""
    as_whom = (
        "the local daemon (every sandbox on this machine)"
        if who.local
        else "admin (every tenant)"
        if who.admin
        else f"tenant {e(who.tenant)}"
    )
    body = f"""<h1>Sign in</h1>
<form method="post" action="/ui/login" class="card" id="link-sign-in">
<input type="hidden" name="token" value="{e(token)}">
<p>This link signs you in as {as_whom}. It works once.</p>
<button type="submit">Open the dashboard</button></form>"""
    return layout("Sign in", body)


def _select(name: str, options: Iterable[str], chosen: str | None) -> str:
    items = "".join(
        f'<option value="{e(o)}"{" selected" if o == chosen else ""}>{e(o)}</option>' for o in options
    )
    return f'<select name="{name}" id="{name}"><option value="">any {name}</option>{items}</select>'


def sandbox_rows(items: list[SandboxInfo]) -> str:
    """The list's table body (also what the page fetches to update itself)."""
    rows = "".join(
        f'<tr data-id="{e(s.id)}"><td><a href="/ui/sandboxes/{e(s.id)}">{e(s.id)}</a></td>'
        f"<td>{e(s.isolation)}</td><td>{e(s.template)}</td>"
        f'<td><span class="state {e(s.state)}" title="{e(s.message or "")}">{e(s.state)}</span>'
        f"{f' <span class=hint>{e(s.reason)}</span>' if s.reason else ''}</td>"
        f"<td>{s.cpu:g} cpu, {s.memory_mb} MB</td><td>{e(when(s.created_at))}</td>"
        f"<td>{e(when(s.expires_at))}</td></tr>"
        for s in items
    )
    if not rows:
        rows = '<tr><td colspan="7" class="empty">No sandboxes.</td></tr>'
    return f"<tbody>{rows}</tbody>"


def sandbox_list(
    session: Session, items: list[SandboxInfo], filters: dict[str, str | None], message: str = ""
) -> str:
    body = f"""<h1>Sandboxes</h1>
<form method="get" action="/ui/" class="filters">
{_select("state", STATES, filters.get("state"))}{_select("tier", TIERS, filters.get("tier"))}
<input name="template" id="template" placeholder="template" maxlength="64"
 value="{e(filters.get("template") or "")}"><button type="submit">Filter</button></form>
<table id="sandboxes"><thead><tr><th>id</th><th>tier</th><th>template</th><th>state</th>
<th>limits</th><th>created</th><th>expires</th></tr></thead>{sandbox_rows(items)}</table>
<p class="hint">This list updates itself as sandboxes are created, change state or end.</p>
<section id="ended-sandboxes" hidden><h2>Recently ended</h2>
<table><thead><tr><th>id</th><th>reason</th><th>why</th><th>ended</th></tr></thead><tbody></tbody>
</table></section>
<form method="post" action="/ui/sandboxes" class="card" id="create">{csrf_field(session)}
<label for="new-template">New sandbox from template</label>
<input id="new-template" name="template" value="base" required maxlength="64"
 pattern="[a-z0-9][a-z0-9._-]*">
<label for="new-tier">Isolation</label>
<select id="new-tier" name="tier">{"".join(f"<option>{t}</option>" for t in TIERS)}</select>
<label for="new-timeout">Lifetime (seconds)</label>
<input id="new-timeout" name="timeout" type="number" min="1" max="86400" value="600" required>
<button type="submit">Create</button></form>"""
    return layout(
        "Sandboxes", body, session, message=message, head='<script src="/ui/static/live.js" defer></script>'
    )


def files(session: Session, sandbox_id: str, path: str, entries: list[EntryInfo], message: str = "") -> str:
    base = f"/ui/sandboxes/{e(sandbox_id)}/files"
    parent = path.rsplit("/", 1)[0] or "/"
    rows = [f'<tr><td colspan="4"><a href="{base}?{urlencode({"path": parent})}">..</a></td></tr>']
    for entry in sorted(entries, key=lambda x: (x.type != "directory", x.name)):
        query = urlencode({"path": entry.path})
        link = (
            f'<a href="{base}?{query}">{e(entry.name)}/</a>'
            if entry.type == "directory"
            else f'<a href="{base}/view?{query}">{e(entry.name)}</a>'
        )
        download = (
            "" if entry.type == "directory" else f'<a href="{base}/download?{query}" download>download</a>'
        )
        rows.append(
            f"<tr><td>{link}</td><td>{e(entry.permissions)}</td><td>{entry.size}</td><td>{download}</td></tr>"
        )
    body = f"""<p><a href="/ui/sandboxes/{e(sandbox_id)}">&larr; sandbox {e(sandbox_id)}</a></p>
<h1>Files in {e(path)}</h1>
<table id="files"><thead><tr><th>name</th><th>mode</th><th>size</th><th></th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<form method="post" action="{base}/upload?{urlencode({"path": path})}" enctype="multipart/form-data"
 class="card">{csrf_field(session)}<label for="upload">Upload into {e(path)}</label>
<input type="file" id="upload" name="file" required><button type="submit">Upload</button></form>"""
    return layout(f"Files {path}", body, session, message=message)


def file_view(session: Session, sandbox_id: str, path: str, content: str, cut: bool) -> str:
    base = f"/ui/sandboxes/{e(sandbox_id)}/files"
    folder = path.rsplit("/", 1)[0] or "/"
    note = '<p class="hint">Only the start of the file is shown.</p>' if cut else ""
    body = (
        f'<p><a href="{base}?{urlencode({"path": folder})}">&larr; {e(folder)}</a> &middot; '
        f'<a href="{base}/download?path={quote(path, safe="")}" download>download</a></p>'
        f'<h1>{e(path)}</h1>{note}<pre class="file">{e(content)}</pre>'
    )
    return layout(path, body, session)


def error(session: Session | None, status: int, message: str) -> str:
    return layout("Error", f"<h1>Error {status}</h1>", session, message=message)


def templates(session: Session, items: list[TemplateInfo], message: str = "") -> str:
    rows = []
    for t in sorted(items, key=lambda t: t.name):
        mine = session.admin or t.owner == session.tenant
        delete = (
            (
                f'<form method="post" action="/ui/templates/{e(t.name)}/delete" class="inline">'
                f'{csrf_field(session)}<button class="kill">Delete</button></form>'
            )
            if mine
            else ""
        )
        source = t.source or "-"
        if source.startswith(SNAPSHOT_OF):  # a snapshot: link the sandbox while it lives
            sid = source[len(SNAPSHOT_OF) :]
            source = f'snapshot of <a href="/ui/sandboxes/{e(sid)}">{e(sid)}</a>'
        else:
            source = e(source)
        rows.append(
            f'<tr data-name="{e(t.name)}"><td>{e(t.name)}</td>'
            f"<td>{e(t.owner or 'shared')}</td><td>{e(t.parent or '-')}</td>"
            f"<td>{source}</td><td>{t.size_bytes // (1 << 20)} MiB</td>"
            f"<td>{e(t.created)}</td><td>{delete}</td></tr>"
        )
    body = f"""<h1>Templates</h1><table id="templates"><thead><tr><th>name</th><th>owner</th>
<th>parent</th><th>made from</th><th>size</th><th>created</th><th></th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<form method="post" action="/ui/templates/build" class="card" id="build">{csrf_field(session)}
<label for="build-name">Build a template</label>
<input id="build-name" name="name" placeholder="name" required maxlength="64"
 pattern="[a-z0-9][a-z0-9._-]*">
<label for="build-dockerfile">Dockerfile (FROM a template; RUN, ENV, WORKDIR, USER)</label>
<textarea id="build-dockerfile" name="dockerfile" rows="8" required maxlength="65536">FROM base
RUN echo hello from the build
</textarea><button type="submit">Build</button></form>
<p class="hint">With a build context (COPY): <code>stockade image build -f Dockerfile --name NAME
--context DIR</code>. A sandbox's page can also save it as a template.</p>"""
    return layout("Templates", body, session, message=message)


def keys(session: Session, items: list[dict[str, Any]], message: str = "") -> str:
    rows = []
    for k in items:
        revoke = (
            f'<form method="post" action="/ui/keys/{e(k["id"])}/revoke" class="inline">'
            f'{csrf_field(session)}<button class="kill">Revoke</button></form>'
            if k["state"] == "active"
            else ""
        )
        rows.append(
            f'<tr data-id="{e(k["id"])}"><td>{e(k["id"])}</td><td>{e(k["tenant"])}</td>'
            f"<td>{e(k.get('name') or '-')}</td><td>{e(k['state'])}</td>"
            f"<td>{e(when(k['created_at']))}</td><td>{e(when(k.get('expires_at')))}</td>"
            f"<td>{revoke}</td></tr>"
        )
    tenant = (
        (
            '<label for="key-tenant">Tenant (created if new)</label><input id="key-tenant" '
            f'name="tenant" maxlength="64" value="{e(session.tenant)}">'
        )
        if session.admin
        else ""
    )
    body = f"""<h1>API keys</h1><table id="keys"><thead><tr><th>id</th><th>tenant</th>
<th>name</th><th>state</th><th>created</th><th>expires</th><th></th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<form method="post" action="/ui/keys" class="card" id="new-key">{csrf_field(session)}{tenant}
<label for="key-name">Name</label><input id="key-name" name="name" maxlength="128">
<label for="key-days">Expires after (days; empty: never)</label>
<input id="key-days" name="expires_days" type="number" min="0.01" max="3650" step="any">
<button type="submit">Create key</button></form>"""
    return layout("API keys", body, session, message=message)


def new_key(session: Session, created: dict[str, Any]) -> str:
    body = f"""<h1>New key {e(created["id"])}</h1>
<p>Tenant <b>{e(created["tenant"])}</b>. Copy the key now: it is shown only this once.</p>
<pre class="file" id="secret">{e(created["key"])}</pre><p><a href="/ui/keys">Back to keys</a></p>"""
    return layout("New key", body, session)


def audit(session: Session, events: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{e(when(ev['at']))}</td><td>{e(ev['tenant'])}</td><td>{e(ev['actor'])}</td>"
        f"<td>{e(ev['action'])}</td><td>{e(ev.get('target') or '-')}</td>"
        f"<td>{e(json.dumps(ev.get('detail') or {}))}</td></tr>"
        for ev in events
    )
    body = f"""<h1>Audit log</h1><p class="hint">Newest first, the last {len(events)} events.</p>
<table id="audit"><thead><tr><th>at</th><th>tenant</th><th>actor</th><th>action</th>
<th>target</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>"""
    return layout("Audit log", body, session)


def build(session: Session, name: str, log: str) -> str:
    """The build page; ``log`` is where the streamed log goes (inside an open ``<pre>``)."""
    body = (
        f'<p><a href="/ui/templates">&larr; templates</a></p><h1>Building {e(name)}</h1>'
        f'<pre class="file" id="build-log">{log}'
    )
    return layout(f"Building {name}", body, session)


def volumes(session: Session, items: list[AsyncVolume], message: str = "") -> str:
    rows = "".join(
        f'<tr data-name="{e(v.name)}"><td>{e(v.name)}</td><td>{v.size_mb} MiB</td>'
        f"<td>{e(v.owner or '-')}</td><td>{e(', '.join(v.mounted_by) or '-')}</td>"
        f'<td>{e(when(v.created_at))}</td><td><form method="post" class="inline" '
        f'action="/ui/volumes/{e(v.name)}/delete">{csrf_field(session)}'
        f'<button class="kill">Delete</button></form></td></tr>'
        for v in items
    )
    body = f"""<h1>Volumes</h1><table id="volumes"><thead><tr><th>name</th><th>size</th>
<th>owner</th><th>mounted by</th><th>created</th><th></th></tr></thead><tbody>{rows}</tbody>
</table><form method="post" action="/ui/volumes" class="card" id="new-volume">
{csrf_field(session)}<label for="volume-name">New volume</label>
<input id="volume-name" name="name" required maxlength="63" pattern="[a-z0-9][a-z0-9._-]*">
<label for="volume-size">Size (MiB)</label>
<input id="volume-size" name="size_mb" type="number" min="16" max="1048576" value="1024">
<button type="submit">Create</button></form>
<p class="hint">Mount one with <code>Sandbox.create(volumes={{"/data": "NAME"}})</code>.</p>"""
    return layout("Volumes", body, session, message=message)


def tenants(session: Session, items: list[dict[str, Any]], message: str = "") -> str:
    fields = (
        ("max_sandboxes", "sandboxes", "sandboxes"),
        ("max_vcpu", "vcpu", "vCPU"),
        ("max_memory_mb", "memory_mb", "memory MB"),
        ("max_disk_mb", "disk_mb", "disk MB"),
        ("max_lifetime", None, "lifetime s"),
    )
    head = "".join(f"<th>{label}</th>" for _, _, label in fields)
    rows = []
    for t in items:
        form = f"tenant-{e(t['name'])}"
        cells = "".join(
            f'<td>{f"{t[used]:g} / " if used else ""}<input form="{form}" name="{quota}" '
            f'type="number" step="any" min="0" aria-label="{quota}" placeholder="{t[quota]:g}">'
            f"</td>"
            for quota, used, _ in fields
        )
        rows.append(
            f'<tr data-name="{e(t["name"])}"><td>{e(t["name"])}</td>{cells}<td>'
            f'<form method="post" id="{form}" action="/ui/tenants/{e(t["name"])}" '
            f'class="inline">{csrf_field(session)}<button>Save</button></form></td></tr>'
        )
    body = f"""<h1>Tenants and quotas</h1>
<p class="hint">In use / quota; type a new quota and save (empty fields stay as they are).</p>
<table id="tenants"><thead><tr><th>tenant</th>{head}<th></th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>"""
    return layout("Tenants", body, session, message=message)
