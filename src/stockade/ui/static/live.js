// The sandboxes list updates itself: every 10 s it fetches its own rows (same filters) and
// swaps the table body, so forms on the page keep what is being typed.
(function () {
  "use strict";
  const table = document.getElementById("sandboxes");
  if (!table) return;
  setInterval(async () => {
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
  }, 10000);
})();
