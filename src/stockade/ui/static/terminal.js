// The sandbox terminal: xterm.js over the server's PTY WebSocket (/sandboxes/{id}/pty).
// The browser sends the session cookie; the CSRF token in the query proves the page is ours.
(function () {
  "use strict";
  const box = document.getElementById("terminal");
  const status = document.getElementById("terminal-status");
  if (!box) return;
  if (typeof Terminal === "undefined" || typeof FitAddon === "undefined") {
    status.textContent = "xterm.js is not installed on the server: run scripts/install";
    return;
  }
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 13 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const query = new URLSearchParams({ cols: term.cols, rows: term.rows, csrf: box.dataset.csrf });
  const ws = new WebSocket(`${scheme}${location.host}/sandboxes/${encodeURIComponent(box.dataset.sandbox)}/pty?${query}`);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") { term.write(new Uint8Array(event.data)); return; }
    const message = JSON.parse(event.data);
    if (message.type === "start") { status.textContent = "connected (pid " + message.pid + ")"; term.focus(); }
    else if (message.type === "end") status.textContent = "the shell exited (" + message.exit_code + ")";
    else if (message.type === "error") status.textContent = "error: " + message.message;
  };
  ws.onclose = (event) => { if (!status.textContent.startsWith("the shell")) status.textContent = "disconnected (" + event.code + ")"; };
  term.onData((data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
  term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });
  window.addEventListener("resize", () => fit.fit());
  window.stockadeTerminal = term;  // for tests and the curious
})();
