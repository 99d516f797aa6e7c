(function () {
  "use strict";
  // Sorting: click a column heading of a table marked data-sortable. Numbers sort as numbers.
  function key(cell) {
    var t = cell.getAttribute("data-value");
    if (t === null) { t = cell.textContent.trim(); }
    var n = t.replace(/[,\s]/g, "");
    return /^[-+]?\d+(\.\d+)?$/.test(n) ? [0, parseFloat(n), t] : [1, 0, t.toLowerCase()];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) { return a[0] - b[0]; }
    if (a[0] === 0) { return a[1] - b[1]; }
    return a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0;
  }
  document.querySelectorAll("table[data-sortable]").forEach(function (table) {
    table.querySelectorAll("th[data-sort]").forEach(function (th, col) {
      th.title = "Sort by this column";
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var down = th.getAttribute("aria-sort") !== "descending";
        rows.sort(function (r1, r2) {
          var c = compare(key(r1.cells[col]), key(r2.cells[col]));
          return down ? -c : c;
        });
        table.querySelectorAll("th[data-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", down ? "descending" : "ascending");
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  // Filtering the findings: a text box shown only when scripts run (the page reads the same without).
  var box = document.getElementById("filter");
  var findings = document.getElementById("findings-table");
  if (box && findings) {
    box.style.display = "block";
    box.addEventListener("input", function () {
      var q = box.value.toLowerCase();
      Array.prototype.forEach.call(findings.tBodies[0].rows, function (r) {
        r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }
})();
