// A sparkline of memory (shaded) and utilization (line) in each GPU row of the host panels,
// for the hosts on screen only: their history is asked for when a panel scrolls into view
// (/api/v1/sparklines?host=...), again every minute while it stays, and when the window changes.
// Each sparkline is built once per answer and moved into its row again after a refresh swapped
// the panel (the "hmonitor:rendered" event of live.js). The cluster map has none.
// Text goes in through textContent only; SVG geometry is numbers computed here.
(function () {
  "use strict";

  var STALE_MS = 60000;
  var POINTS = 60;
  var BATCH_MS = 50; // panels that come into view together are asked for in one request
  var KEY = "hmonitor-spark-window";
  var DEFAULT_WINDOW = "24h";
  var WINDOWS = { "1h": "1 h", "24h": "24 h", "10d": "10 d" };
  var NS = "http://www.w3.org/2000/svg";

  var grid = document.getElementById("hosts");
  var select = document.getElementById("spark-window");
  if (!grid || !select || !window.IntersectionObserver) {
    return;
  }
  var getJSON = window.hmonitorApi.getJSON;

  var sparks = new Map(); // "host/gpu" -> the sparkline node for the window shown
  var loadedAt = new Map(); // host -> performance.now() of its last answer
  var visible = new Set(); // hosts whose panel is on screen
  var wanted = new Set(); // hosts to ask for in the next batch
  var batchTimer = null;
  var shownWindow = select.value;

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

  // --- drawing ------------------------------------------------------------------------------

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

  function gpuUrl(key) {
    var cut = key.lastIndexOf("/");
    return "/host/" + encodeURIComponent(key.slice(0, cut)) + "/gpu/" + key.slice(cut + 1);
  }

  function sparkNode(key, line, label) {
    var link = document.createElement("a");
    link.className = "spark";
    link.href = gpuUrl(key);
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

  function noData(key) {
    var link = document.createElement("a");
    link.className = "spark none";
    link.textContent = "no data";
    link.href = gpuUrl(key);
    link.title = "no history in the last " + WINDOWS[shownWindow];
    return link;
  }

  // Puts each GPU row of `panel` its sparkline, once the host's answer is in.
  function attach(panel) {
    var host = panel.dataset.k;
    if (host === undefined || !loadedAt.has(host)) return;
    var head = panel.querySelector("table.gpus > thead th:nth-child(8)");
    var label = "last " + WINDOWS[shownWindow];
    if (head && head.textContent !== label) head.textContent = label;
    var rows = panel.querySelectorAll("tr[data-gpu]");
    for (var r = 0; r < rows.length; r++) {
      var cell = rows[r].cells[7];
      if (!cell) continue; // a lost GPU's row: its error spans the sparkline column
      var key = host + "/" + rows[r].dataset.gpu;
      var node = sparks.get(key);
      if (node === undefined) {
        node = noData(key);
        sparks.set(key, node);
      }
      if (cell.firstChild !== node) cell.replaceChildren(node);
    }
  }

  function panelOf(host) {
    return grid.querySelector("article[data-k=\"" + CSS.escape(host) + "\"]");
  }

  // --- asking for the hosts on screen -------------------------------------------------------

  function ask(host) {
    wanted.add(host);
    if (batchTimer === null) batchTimer = setTimeout(load, BATCH_MS);
  }

  function load() {
    batchTimer = null;
    var hosts = Array.from(wanted);
    wanted.clear();
    if (!hosts.length) return;
    var asked = select.value;
    var q = new URLSearchParams({ window: asked, points: POINTS });
    hosts.forEach(function (h) { q.append("host", h); });
    var started = performance.now();
    getJSON("/api/v1/sparklines", q)
      .then(function (data) {
        if (select.value !== asked) return; // another window was chosen meanwhile
        var t0 = performance.now();
        var label = WINDOWS[data.window] || data.window;
        var prefix = new Set(hosts.map(function (h) { return h + "/"; }));
        sparks.forEach(function (_, key) { // drop these hosts' old lines: some GPUs may be gone
          if (prefix.has(key.slice(0, key.lastIndexOf("/") + 1))) sparks.delete(key);
        });
        Object.keys(data.gpus).forEach(function (key) {
          sparks.set(key, sparkNode(key, data.gpus[key], label));
        });
        shownWindow = data.window;
        var now = performance.now();
        hosts.forEach(function (h) {
          loadedAt.set(h, now);
          var panel = panelOf(h);
          if (panel) attach(panel);
        });
        performance.measure("hmonitor:sparklines", { start: t0, end: performance.now() });
        performance.measure("hmonitor:sparklines-total", { start: started, end: performance.now() });
      })
      .catch(function () {
        // keep what is shown; live.js reports an outage in the status line
      });
  }

  var observer = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      var host = e.target.dataset.k;
      if (e.isIntersecting) {
        visible.add(host);
        var at = loadedAt.get(host);
        if (at === undefined || performance.now() - at > STALE_MS) ask(host);
        else attach(e.target);
      } else {
        visible.delete(host);
      }
    });
  }, { rootMargin: "200px" });

  function watchPanels() {
    observer.disconnect();
    visible.clear();
    var panels = grid.querySelectorAll("article[data-k]");
    for (var i = 0; i < panels.length; i++) {
      attach(panels[i]);
      observer.observe(panels[i]);
    }
  }

  // --- wiring -------------------------------------------------------------------------------

  select.value = initialWindow();
  if (select.value !== DEFAULT_WINDOW) rememberWindow(select.value);
  select.addEventListener("change", function () {
    rememberWindow(select.value);
    loadedAt.clear();
    visible.forEach(ask);
  });
  grid.addEventListener("hmonitor:rendered", watchPanels);
  setInterval(function () {
    if (document.hidden) return;
    var now = performance.now();
    visible.forEach(function (h) {
      if (now - (loadedAt.get(h) || 0) > STALE_MS) ask(h);
    });
  }, 10000);
  watchPanels();
})();
