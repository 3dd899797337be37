// A sandbox's page, kept live. The server's event stream (/ui/events) tells at once when the
// sandbox changes state or ends; every 2 s /ui/sandboxes/{id}/live brings its reason, usage
// charts (points drawn by the server from the usage history), processes and egress log. A
// change of state reloads the page (other buttons apply); a sandbox that ended reloads into
// its end record (why and when), or says what the API said if none is kept.
(function () {
  "use strict";
  const live = document.getElementById("live");
  if (!live) return;
  const id = live.dataset.sandbox, csrf = live.dataset.csrf;
  const base = `/ui/sandboxes/${encodeURIComponent(id)}`;
  let timer = null, events = null;

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

  function charts(drawn) {
    let samples = 0;
    for (const [name, chart] of Object.entries(drawn || {})) {
      const svg = document.getElementById("chart-" + name);
      if (!svg) continue;
      svg.querySelector("polyline").setAttribute("points", chart.points);
      svg.parentElement.dataset.latest = chart.latest;
      svg.parentElement.querySelector("figcaption").dataset.latest = chart.latest;
      const top = svg.parentElement.querySelector(".top");
      if (top) top.textContent = chart.top ? "top " + chart.top : "";
      samples = chart.samples;
    }
    const box = document.getElementById("charts");
    if (box) box.dataset.samples = String(samples);
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

  function stop() {
    clearInterval(timer);
    if (events) events.close();
  }

  function gone(answer) {
    stop();
    if (answer.reason) { location.reload(); return; }  // the page of its end record
    const box = document.getElementById("ended");
    box.textContent = "This sandbox is gone: " + answer.ended;
    box.hidden = false;
    live.dataset.state = "ended";
    document.querySelectorAll(".actions button, #terminal").forEach((el) => { el.disabled = true; });
    const status = document.getElementById("terminal-status");
    if (status) status.textContent = "the sandbox is gone";
  }

  async function update() {
    let response;
    try {
      response = await fetch(`${base}/live`, { credentials: "same-origin", redirect: "error" });
    } catch (error) { return; }  // the server is away; try again
    if (response.status === 404) return gone(await response.json());
    if (!response.ok) return;
    const now = await response.json();
    if (now.state !== live.dataset.state) { stop(); location.reload(); return; }
    for (const [field, value] of [["reason", now.reason], ["why", now.message], ["expires", when(now.expires_at)]]) {
      const td = document.querySelector(`[data-field="${field}"]`);
      if (td) td.textContent = value || "-";
    }
    for (const [key, value] of Object.entries(now.stats || {})) {
      const td = document.querySelector(`[data-stat="${key}"]`);
      if (td) td.textContent = String(value);
    }
    charts(now.charts);
    processes(now.processes);
    egress(now.egress);
  }

  events = new EventSource("/ui/events");
  events.addEventListener("sandbox", (message) => {
    if (JSON.parse(message.data).sandbox_id === id) update();
  });
  events.onerror = () => { if (events.readyState === EventSource.CLOSED) events = null; };
  window.addEventListener("pagehide", stop);
  document.addEventListener("submit", stop);  // a button's own answer comes next: no reload
  update();
  timer = setInterval(update, 2000);
})();
