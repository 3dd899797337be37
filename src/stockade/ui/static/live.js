// The sandboxes list, kept live. The server's event stream (/ui/events, replayed from the
// engine's last kept events) refreshes the table's rows (same filters) when a sandbox is
// created, changes state or ends, and fills "Recently ended" with each end and its reason.
// Without the stream (a cluster replica has none) the rows refresh every 10 s. Only the
// table body is swapped, so forms on the page keep what is being typed.
(function () {
  "use strict";
  const table = document.getElementById("sandboxes");
  if (!table) return;
  const ended = new Map();  // sandbox id -> its "ended" event
  let pending = null, poll = null;

  async function refresh() {
    pending = null;
    const url = new URL(location.href);
    url.searchParams.set("rows", "1");
    try {
      const response = await fetch(url, { credentials: "same-origin", redirect: "error" });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(
        "<table>" + await response.text() + "</table>", "text/html");
      const rows = doc.querySelector("tbody");
      if (rows) table.querySelector("tbody").replaceWith(rows);
    } catch (error) { /* the server is away; try again next time */ }
  }

  function soon() { if (!pending) pending = setTimeout(refresh, 300); }

  function showEnded() {
    const box = document.getElementById("ended-sandboxes");
    if (!box || !ended.size) return;
    const rows = [...ended.values()].sort((a, b) => b.time - a.time).slice(0, 50).map((ev) => {
      const row = document.createElement("tr");
      row.dataset.id = ev.sandbox_id;
      const link = document.createElement("a");
      link.href = `/ui/sandboxes/${encodeURIComponent(ev.sandbox_id)}`;
      link.textContent = ev.sandbox_id;
      const cells = [link, ev.reason || "-", ev.message || "-",
                     new Date(ev.time * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC"];
      for (const content of cells) {
        const td = document.createElement("td");
        td.append(content);
        row.appendChild(td);
      }
      row.children[1].className = "reason";
      return row;
    });
    box.querySelector("tbody").replaceChildren(...rows);
    box.hidden = false;
  }

  const events = new EventSource("/ui/events?since=0");
  events.addEventListener("sandbox", (message) => {
    const ev = JSON.parse(message.data);
    if (ev.kind !== "state") return;
    if (ev.state === "ended") { ended.set(ev.sandbox_id, ev); showEnded(); }
    soon();
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED && !poll) poll = setInterval(refresh, 10000);
  };
})();
