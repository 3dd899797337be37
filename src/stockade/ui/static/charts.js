// Usage charts on a sandbox's page: memory and CPU, sampled every 2 s from
// /ui/sandboxes/{id}/stats since the page opened (the last 3 minutes).
(function () {
  "use strict";
  const box = document.getElementById("charts");
  if (!box) return;
  const url = `/ui/sandboxes/${encodeURIComponent(box.dataset.sandbox)}/stats`;
  const KEEP = 90, NS = "http://www.w3.org/2000/svg";
  const memory = [], cpu = [];
  let last = null;

  function draw(id, values, unit) {
    const svg = document.getElementById(id);
    const top = Math.max(1, ...values) * 1.15;
    const points = values.map((v, i) =>  // the newest sample at the right edge
      `${300 - ((values.length - 1 - i) / (KEEP - 1)) * 300},${80 - (v / top) * 78}`).join(" ");
    svg.replaceChildren();
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", points);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#0969da");
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(line);
    svg.parentElement.dataset.latest = values.length ? values[values.length - 1].toFixed(1) + unit : "";
    svg.parentElement.querySelector("figcaption").dataset.latest = svg.parentElement.dataset.latest;
  }

  async function sample() {
    try {
      const response = await fetch(url, { credentials: "same-origin", redirect: "error" });
      if (!response.ok) return;
      const now = await response.json();
      const t = performance.now() / 1000;
      memory.push(now.memory_bytes / 1048576);
      if (last) cpu.push(Math.max(0, (now.cpu_seconds - last.cpu) / (t - last.t) * 100));
      last = { cpu: now.cpu_seconds, t };
      for (const series of [memory, cpu]) while (series.length > KEEP) series.shift();
      draw("chart-memory", memory, " MiB");
      draw("chart-cpu", cpu, " %");
      box.dataset.samples = String(memory.length);
    } catch (error) { /* the sandbox or the server is away; try again */ }
  }
  sample();
  setInterval(sample, 2000);
})();
