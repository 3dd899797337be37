// A sandbox's page, kept live: every 2 s it reads /ui/sandboxes/{id}/live and updates the
// state and its reason, the usage charts (memory, CPU, processes; the last 3 minutes since
// the page opened), the processes and the egress log. A change of state reloads the page
// (other buttons apply); a sandbox that is gone says why and stops the updates.
(function () {
  "use strict";
  const live = document.getElementById("live");
  if (!live) return;
  const id = live.dataset.sandbox, csrf = live.dataset.csrf;
  const base = `/ui/sandboxes/${encodeURIComponent(id)}`;
  const KEEP = 90, NS = "http://www.w3.org/2000/svg";
  const series = { memory: [], cpu: [], pids: [] };
  let last = null, timer = null;

  function draw(name, values, unit) {
    const svg = document.getElementById("chart-" + name);
    if (!svg) return;
    const top = Math.max(1, ...values) * 1.15;
    const points = values.map((v, i) =>  // the newest sample at the right edge
      `${300 - ((values.length - 1 - i) / (KEEP - 1)) * 300},${80 - (v / top) * 78}`).join(" ");
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", points);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#0969da");
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.replaceChildren(line);
    const latest = values.length ? values[values.length - 1].toFixed(name === "pids" ? 0 : 1) + unit : "";
    svg.parentElement.dataset.latest = latest;
    svg.parentElement.querySelector("figcaption").dataset.latest = latest;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function when(epoch) {
    return epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "-";
  }

  function empty(body, columns, text) {
    const row = document.createElement("tr");
    cell(row, text, "empty").colSpan = columns;
    body.replaceChildren(row);
  }

  function processes(items) {
    const body = document.querySelector("#processes tbody");
    if (!body) return;
    if (!items.length) return empty(body, 5, "No process.");
    body.replaceChildren(...items.map((p) => {
      const row = document.createElement("tr");
      row.dataset.pid = p.pid;
      for (const text of [p.pid, p.tag || "", (p.cmd || "").slice(0, 200), p.status || ""]) cell(row, String(text));
      const actions = cell(row, "");
      if (p.pty) actions.append("(terminal) ");
      else {
        const a = document.createElement("a");
        a.href = `${base}/processes/${p.pid}`;
        a.textContent = "follow output";
        actions.append(a, " ");
      }
      const form = document.createElement("form");
      form.method = "post"; form.action = `${base}/processes/${p.pid}/kill`; form.className = "inline";
      const token = document.createElement("input");
      token.type = "hidden"; token.name = "csrf"; token.value = csrf;
      const button = document.createElement("button");
      button.className = "kill"; button.textContent = "Kill";
      form.append(token, button);
      actions.appendChild(form);
      return row;
    }));
  }

  function egress(items) {
    const body = document.querySelector("#egress tbody");
    if (!body) return;
    if (!items.length) return empty(body, 7, "No connection yet.");
    body.replaceChildren(...items.slice().reverse().map((x) => {
      const row = document.createElement("tr");
      row.className = x.verdict;
      const bytes = (v) => (v === null || v === undefined ? "-" : String(v));
      for (const text of [when(x.time), x.kind, x.name || "-", x.destination || "-", x.verdict,
                          x.reason || "", `${bytes(x.bytes_out)} / ${bytes(x.bytes_in)}`]) cell(row, text);
      return row;
    }));
  }

  function ended(message) {
    const box = document.getElementById("ended");
    box.textContent = "This sandbox is gone: " + message;
    box.hidden = false;
    live.dataset.state = "ended";
    document.querySelectorAll(".actions button, #terminal").forEach((el) => { el.disabled = true; });
    const status = document.getElementById("terminal-status");
    if (status) status.textContent = "the sandbox is gone";
    clearInterval(timer);
  }

  async function update() {
    let response;
    try {
      response = await fetch(`${base}/live`, { credentials: "same-origin", redirect: "error" });
    } catch (error) { return; }  // the server is away; try again
    if (response.status === 404) return ended((await response.json()).ended);
    if (!response.ok) return;
    const now = await response.json();
    if (now.state !== live.dataset.state) { location.reload(); return; }
    const reason = document.querySelector('[data-field="reason"]');
    if (reason) reason.textContent = now.reason || "-";
    const expires = document.querySelector('[data-field="expires"]');
    if (expires) expires.textContent = when(now.expires_at);
    if (now.stats) {
      const t = performance.now() / 1000;
      series.memory.push(now.stats.memory_bytes / 1048576);
      series.pids.push(now.stats.pids);
      if (last) series.cpu.push(Math.max(0, (now.stats.cpu_seconds - last.cpu) / (t - last.t) * 100));
      last = { cpu: now.stats.cpu_seconds, t };
      for (const values of Object.values(series)) while (values.length > KEEP) values.shift();
      draw("memory", series.memory, " MiB");
      draw("cpu", series.cpu, " %");
      draw("pids", series.pids, "");
      for (const [key, value] of Object.entries(now.stats)) {
        const td = document.querySelector(`[data-stat="${key}"]`);
        if (td) td.textContent = String(value);
      }
      const charts = document.getElementById("charts");
      if (charts) charts.dataset.samples = String(series.memory.length);
    }
    processes(now.processes);
    egress(now.egress);
  }
  update();
  timer = setInterval(update, 2000);
})();
