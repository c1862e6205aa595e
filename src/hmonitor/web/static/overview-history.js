// The overview's history parts: a sparkline of memory and utilization in each GPU row, the
// alerts strip under the summary, and "idle Nh" badges on processes that hold an idle GPU.
//
// Sparklines come from one request for all GPUs (/api/v1/sparklines), every minute and when the
// window changes, never with the 5 s host refresh. Each GPU's sparkline is built once per answer
// and moved into its row again after each render of overview.js (the "hmonitor:rendered" event),
// so a refresh costs a lookup per row, not a redraw. Alerts come from /api/v1/alerts.
// Text goes in through textContent only; SVG geometry is numbers we compute.
(function () {
  "use strict";

  var SPARK_MS = 60000;
  var ALERTS_MS = 15000;
  var POINTS = 60;
  var KEY = "hmonitor-spark-window";
  var DEFAULT_WINDOW = "24h";
  var WINDOWS = { "1h": "1 h", "24h": "24 h", "10d": "10 d" };
  var MAX_ALERTS_SHOWN = 4; // the rest behind "+N more": the strip stays one line
  var NS = "http://www.w3.org/2000/svg";
  var GIB = 1073741824;

  var grid = document.getElementById("hosts");
  var select = document.getElementById("spark-window");
  var strip = document.getElementById("alerts");
  if (!grid || !select || !strip) {
    return;
  }

  var sparks = new Map(); // "host/gpu" -> the row's sparkline node for the window shown
  var shownWindow = null; // the window of `sparks`
  var hogs = []; // [{host, gpu, pid, basename, mem, idle_seconds, since}]
  var alertsOpen = false;
  var sparkTimer = null;
  var alertTimer = null;

  // --- small helpers ------------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function gpuUrl(host, gpu) {
    return "/host/" + encodeURIComponent(host) + "/gpu/" + gpu;
  }

  var getJSON = window.hmonitorApi.getJSON;

  // Idle time as views.idle_text writes it.
  function idleText(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    return s >= 3600 ? Math.floor(s / 3600) + "h" : Math.floor(s / 60) + "m";
  }

  function clock(t) {
    var d = new Date(t * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // --- the window: URL first, then the last choice, then 24 h -----------------------------

  function initialWindow() {
    var asked = new URLSearchParams(location.search).get("window");
    if (WINDOWS[asked]) return asked;
    try {
      var stored = localStorage.getItem(KEY);
      if (WINDOWS[stored]) return stored;
    } catch (e) {
      // storage disabled: the default
    }
    return DEFAULT_WINDOW;
  }

  function rememberWindow(w) {
    try {
      localStorage.setItem(KEY, w);
    } catch (e) {
      // not remembered across visits, still in the URL
    }
    var q = new URLSearchParams(location.search);
    if (w === DEFAULT_WINDOW) q.delete("window");
    else q.set("window", w);
    var query = q.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
  }

  // --- sparklines ---------------------------------------------------------------------------

  // Path data over a viewBox of n x 20: x = i + 0.5, y from the top (1) to the bottom (19).
  // Nulls (no data in that stretch) break the line; a lone point becomes a short dash.
  function pathData(values, max, area) {
    var d = [];
    var n = values.length;
    var i = 0;
    while (i < n) {
      if (values[i] === null) { i++; continue; }
      var start = i;
      while (i < n && values[i] !== null) i++;
      var pts = [];
      for (var k = start; k < i; k++) {
        var v = Math.min(Math.max(values[k] / max, 0), 1);
        pts.push([k + 0.5, Math.round((19 - v * 18) * 10) / 10]);
      }
      if (pts.length === 1) {
        pts = [[pts[0][0] - 0.5, pts[0][1]], [pts[0][0] + 0.5, pts[0][1]]];
      }
      var first = pts[0][0];
      var last = pts[pts.length - 1][0];
      var line = pts.map(function (p) { return p[0] + " " + p[1]; }).join("L");
      d.push(area ? "M" + first + " 20L" + line + "L" + last + " 20Z" : "M" + line);
    }
    return d.join("");
  }

  function summary(values, agg) {
    var n = 0;
    var acc = agg === "max" ? -Infinity : 0;
    values.forEach(function (v) {
      if (v === null) return;
      n++;
      acc = agg === "max" ? Math.max(acc, v) : acc + v;
    });
    if (!n) return null;
    return agg === "max" ? acc : acc / n;
  }

  function sparkNode(key, line, label) {
    var cut = key.lastIndexOf("/");
    var link = el("a", "spark");
    link.href = gpuUrl(key.slice(0, cut), key.slice(cut + 1));
    var svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + line.util.length + " 20");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    var util = summary(line.util, "avg");
    var mem = summary(line.mem, "max");
    var title = document.createElementNS(NS, "title");
    title.textContent = util === null && mem === null ? "no history in the last " + label
      : "util avg " + (util === null ? "\u2014" : Math.round(util) + " %") +
        ", mem max " + (mem === null ? "\u2014" : Math.round(mem * 100) + " %") +
        ", last " + label;
    var area = document.createElementNS(NS, "path");
    area.setAttribute("class", "sm");
    area.setAttribute("d", pathData(line.mem, 1, true));
    var stroke = document.createElementNS(NS, "path");
    stroke.setAttribute("class", "su");
    stroke.setAttribute("d", pathData(line.util, 100, false));
    svg.append(title, area, stroke);
    link.append(svg);
    return link;
  }

  function noData(host, gpu) {
    var link = el("a", "spark none", "no data");
    link.href = gpuUrl(host, gpu);
    link.title = "no history in the last " + WINDOWS[shownWindow];
    return link;
  }

  function build(data) {
    var label = WINDOWS[data.window] || data.window;
    var next = new Map();
    Object.keys(data.gpus).forEach(function (key) {
      next.set(key, sparkNode(key, data.gpus[key], label));
    });
    sparks = next;
    shownWindow = data.window;
  }

  // Puts each GPU row's sparkline in its last cell; rows that already hold theirs are left alone.
  function attach() {
    if (shownWindow === null) return;
    var label = "last " + WINDOWS[shownWindow];
    var heads = grid.querySelectorAll("table.gpus > thead th:nth-child(8)");
    for (var h = 0; h < heads.length; h++) {
      if (heads[h].textContent !== label) heads[h].textContent = label;
    }
    var panels = grid.children;
    for (var p = 0; p < panels.length; p++) {
      var host = panels[p].dataset.host;
      if (host === undefined) continue;
      var rows = panels[p].querySelectorAll("tr[data-gpu]");
      for (var r = 0; r < rows.length; r++) {
        var cell = rows[r].cells[7];
        if (!cell) { // a lost GPU's row: its error spans the sparkline column too
          var error = rows[r].cells[1];
          if (error && error.colSpan !== 7) error.colSpan = 7;
          continue;
        }
        var gpu = rows[r].dataset.gpu;
        var key = host + "/" + gpu;
        var node = sparks.get(key);
        if (node === undefined) {
          node = noData(host, gpu);
          sparks.set(key, node);
        }
        if (cell.firstChild !== node) cell.replaceChildren(node);
      }
    }
  }

  function loadSparks() {
    clearTimeout(sparkTimer);
    var asked = select.value;
    var started = performance.now();
    getJSON("/api/v1/sparklines?window=" + encodeURIComponent(asked) + "&points=" + POINTS)
      .then(function (data) {
        if (select.value !== asked) return; // the user chose another window meanwhile
        var t0 = performance.now();
        build(data);
        attach();
        var t1 = performance.now();
        // Read by the browser test (800 GPUs): the DOM work, and request to drawn.
        performance.measure("hmonitor:sparklines", { start: t0, end: t1 });
        performance.measure("hmonitor:sparklines-total", { start: started, end: t1 });
      })
      .catch(function () {
        // Keep the sparklines shown; the status line of overview.js reports an outage.
      })
      .finally(function () {
        if (!document.hidden) sparkTimer = setTimeout(loadSparks, SPARK_MS);
      });
  }

  // --- alerts and idle-process badges -----------------------------------------------------

  var KIND_LABEL = { host_down: "down", disk_full: "disk", idle_hog: "idle" };

  function hogOf(a) {
    if (a.kind !== "idle_hog") return null;
    return { host: a.host, gpu: a.gpu, pid: a.pid, idle: a.idle_seconds, text: a.message };
  }

  function alertItem(a, hog) {
    var item = el(hog ? "a" : "span", "alert " + a.kind);
    if (hog) {
      item.href = gpuUrl(hog.host, hog.gpu);
    }
    item.append(el("b", null, KIND_LABEL[a.kind] || a.kind), " " + a.message);
    if (a.since && a.kind === "host_down") item.title = "last seen " + clock(a.since);
    return item;
  }

  function renderAlerts(alerts) {
    hogs = [];
    var items = alerts.map(function (a) {
      var hog = hogOf(a);
      if (hog) hogs.push(hog);
      return alertItem(a, hog);
    });
    strip.hidden = !items.length;
    if (!items.length) {
      strip.replaceChildren();
      return;
    }
    var counts = {};
    alerts.forEach(function (a) { counts[a.kind] = (counts[a.kind] || 0) + 1; });
    var head = el("span", "alerts-head", alerts.length === 1 ? "1 alert" : alerts.length + " alerts");
    head.title = Object.keys(counts).map(function (k) {
      return counts[k] + " " + (KIND_LABEL[k] || k);
    }).join(", ");
    var shown = alertsOpen ? items : items.slice(0, MAX_ALERTS_SHOWN);
    var children = [head].concat(shown);
    if (items.length > MAX_ALERTS_SHOWN) {
      var more = el("button", "btn small ghost alerts-more",
        alertsOpen ? "show fewer" : "+" + (items.length - MAX_ALERTS_SHOWN) + " more");
      more.type = "button";
      more.addEventListener("click", function () {
        alertsOpen = !alertsOpen;
        renderAlerts(alerts);
      });
      children.push(more);
    }
    strip.replaceChildren.apply(strip, children);
  }

  // "idle 4h" on the chip of each idle process (chips carry their pids: data-pids).
  function applyHogs() {
    var old = grid.querySelectorAll(".hogb");
    for (var i = 0; i < old.length; i++) {
      old[i].parentNode.classList.remove("hog");
      old[i].remove();
    }
    hogs.forEach(function (h) {
      var panel = grid.querySelector("article[data-host=\"" + CSS.escape(h.host) + "\"]");
      var row = panel && panel.querySelector("tr[data-gpu=\"" + h.gpu + "\"]");
      if (!row || !row.cells[6]) return;
      var chips = row.cells[6].children;
      for (var c = 0; c < chips.length; c++) {
        var pids = (chips[c].dataset.pids || "").split(" ");
        if (pids.indexOf(String(h.pid)) >= 0) {
          var badge = el("b", "hogb", "idle " + idleText(h.idle));
          badge.title = h.text;
          chips[c].classList.add("hog");
          chips[c].prepend(badge); // first: a long chip is cut at its end

          return;
        }
      }
    });
  }

  function loadAlerts() {
    clearTimeout(alertTimer);
    getJSON("/api/v1/alerts")
      .then(function (data) {
        renderAlerts(data.alerts);
        applyHogs();
      })
      .catch(function () {
        // keep the last strip
      })
      .finally(function () {
        if (!document.hidden) alertTimer = setTimeout(loadAlerts, ALERTS_MS);
      });
  }

  // --- wiring -------------------------------------------------------------------------------

  select.value = initialWindow();
  if (select.value !== DEFAULT_WINDOW) rememberWindow(select.value);
  select.addEventListener("change", function () {
    rememberWindow(select.value);
    loadSparks();
  });
  grid.addEventListener("hmonitor:rendered", function () {
    attach();
    applyHogs();
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      clearTimeout(sparkTimer);
      clearTimeout(alertTimer);
    } else {
      loadSparks();
      loadAlerts();
    }
  });

  loadSparks();
  loadAlerts();
})();
