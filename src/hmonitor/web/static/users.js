// Sorts the users table by the column whose heading is clicked: numbers (each cell's data-v)
// biggest first, names A to Z; a second click reverses. Ties keep the user names in order.
(function () {
  "use strict";

  var table = document.getElementById("users-table");
  if (!table) {
    return;
  }
  var body = table.tBodies[0];
  var heads = table.querySelectorAll("th[data-col]");
  var current = null;
  var descending = false;

  function key(row, col, text) {
    var cell = row.cells[col];
    if (text) return (cell.textContent || "").trim().toLowerCase();
    var v = Number(cell.dataset.v);
    return isNaN(v) ? 0 : v;
  }

  function sortBy(th) {
    var col = Number(th.dataset.col);
    var text = th.dataset.type === "text";
    descending = current === th ? !descending : !text;
    current = th;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col, text);
      var y = key(b, col, text);
      var order = x < y ? -1 : x > y ? 1 : 0;
      if (descending) order = -order;
      return order || (a.dataset.user < b.dataset.user ? -1 : 1);
    });
    body.append.apply(body, rows);
    heads.forEach(function (h) {
      if (h === th) h.setAttribute("aria-sort", descending ? "descending" : "ascending");
      else h.removeAttribute("aria-sort");
    });
  }

  heads.forEach(function (th) {
    var button = th.querySelector("button");
    if (button) button.addEventListener("click", function () { sortBy(th); });
  });
})();
