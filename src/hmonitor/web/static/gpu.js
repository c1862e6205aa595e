// The GPU detail page: utilization, memory, temperature and memory by user of one GPU over the
// chosen window, drawn by charts.js from /api/v1/history and /api/v1/history/processes and
// reloaded every minute. The window is kept in the URL; the CSV links follow it.
(function () {
  "use strict";

  var RELOAD_MS = 60000;
  var GIB = 1073741824;
  var USER_COLOURS = 8; // .k-c0 ... .k-c7 in hmonitor.css

  var root = document.getElementById("gpu-detail");
  var nav = document.getElementById("windows");
  if (!root || !nav || !window.HMCharts) {
    return;
  }
  var host = root.dataset.host;
  var gpu = root.dataset.gpu;
  var status = document.getElementById("chart-status");
  var chosen = nav.querySelector("[aria-current]") || nav.querySelector("a");
  var timer = null;
  var generation = 0;

  function $(id) { return document.getElementById(id); }

  var getJSON = window.hmonitorApi.getJSON;

  // --- the charts' scales ---------------------------------------------------------------
  // Axis ticks and hover readouts of the charts, numbers as they come (two decimals at most).
  // How a size reads elsewhere on the pages is the server's rule (pages/display.py).

  function trim(x) { return String(Math.round(x * 100) / 100); }
  function gib(v) { return trim(v) + " GiB"; }
  function pct(v) { return Math.round(v) + " %"; }
  function deg(v) { return Math.round(v) + " \u00b0C"; }
  function toGiB(v) { return v.map(function (x) { return x === null ? null : x / GIB; }); }

  // --- charts -------------------------------------------------------------------------------

  function drawAll(a, since, until, step) {
    var util = a[0];
    var mem = a[1];
    var total = a[2];
    var temp = a[3];
    var procs = a[4];
    var common = { since: since, until: until, step: step };

    function opts(id, extra) {
      var o = { readout: $("readout-" + id), legend: $("legend-" + id) };
      [common, extra].forEach(function (src) {
        Object.keys(src).forEach(function (k) { o[k] = src[k]; });
      });
      return o;
    }

    HMCharts.draw($("chart-util"), opts("util", {
      title: "Utilization", yMin: 0, yMax: 100, tick: function (v) { return v + " %"; },
      format: pct, series: [{ label: "util", key: "util", t: util.t, v: util.v, area: true }],
    }));
    // Up to the GPU's memory: a full GPU reaches the top.
    var capacity = total.v.reduce(function (m, v) { return v === null ? m : Math.max(m, v); }, 0);
    HMCharts.draw($("chart-mem"), opts("mem", {
      title: "Memory", yMin: 0, yMax: capacity > 0 ? capacity / GIB : null, tick: gib,
      format: gib, series: [
        { label: "used", key: "mem", t: mem.t, v: toGiB(mem.v), area: true },
        { label: "total", key: "total", t: total.t, v: toGiB(total.v), dash: true },
      ],
    }));
    HMCharts.draw($("chart-temp"), opts("temp", {
      title: "Temperature", yMin: null, yMax: null, tick: function (v) { return trim(v) + " \u00b0C"; },
      format: deg, series: [{ label: "temperature", key: "temp", t: temp.t, v: temp.v }],
    }));

    // Biggest users at the bottom of the stack, each with a colour of its own.
    var sums = {};
    Object.keys(procs.users).forEach(function (u) {
      sums[u] = procs.users[u].reduce(function (s, v) { return s + (v || 0); }, 0);
    });
    var users = Object.keys(procs.users).filter(function (u) { return sums[u] > 0; })
      .sort(function (x, y) { return sums[y] - sums[x] || (x < y ? -1 : 1); });
    HMCharts.draw($("chart-procs"), opts("procs", {
      title: "Memory by user", yMin: 0, yMax: null, stacked: true,
      tick: gib, format: gib,
      empty: "No processes in this window",
      series: users.map(function (u, i) {
        return { label: u, key: "c" + (i % USER_COLOURS), t: procs.t, v: toGiB(procs.users[u]) };
      }),
    }));
  }

  function load() {
    clearTimeout(timer);
    var gen = ++generation;
    var seconds = Number(chosen.dataset.seconds);
    var until = Date.now() / 1000;
    var since = until - seconds;
    // About a point per pixel of the widest chart: finer would not show, coarser would blur.
    var points = Math.min(1000, Math.max(120, Math.round($("chart-util").clientWidth)));
    var base = { host: host, gpu: gpu, since: since.toFixed(3), until: until.toFixed(3) };

    function series(metric, agg) {
      return getJSON("/api/v1/history", Object.assign({ metric: metric, agg: agg, points: points }, base));
    }

    status.textContent = "loading\u2026";
    Promise.all([
      series("util", "avg"),
      series("mem", "avg"),
      series("mem_total", "max"),
      series("temp", "avg"),
      getJSON("/api/v1/history/processes", Object.assign({ points: Math.min(points, 500) }, base)),
    ])
      .then(function (answers) {
        if (gen !== generation) return; // another window was chosen meanwhile
        drawAll(answers, since, until, seconds / points);
        status.textContent = "updated " + HMCharts.stamp(until).slice(11) +
          " \u00b7 hover a chart for its values";
        status.classList.remove("bad");
      })
      .catch(function (err) {
        if (gen !== generation) return;
        status.textContent = "not updated: " + err.message + " (retrying)";
        status.classList.add("bad");
      })
      .finally(function () {
        if (gen === generation && !document.hidden) timer = setTimeout(load, RELOAD_MS);
      });
  }

  function choose(link) {
    nav.querySelectorAll("a").forEach(function (a) { a.removeAttribute("aria-current"); });
    link.setAttribute("aria-current", "true");
    chosen = link;
    var q = new URLSearchParams(location.search);
    q.set("window", link.dataset.window);
    history.replaceState(null, "", "?" + q.toString());
    document.querySelectorAll("a.csv[href]").forEach(function (a) {
      var url = new URL(a.href);
      url.searchParams.set("window", link.dataset.seconds);
      a.href = url.pathname + url.search;
    });
    load();
  }

  nav.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-window]");
    if (!link) return;
    event.preventDefault(); // redrawn in place
    choose(link);
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) clearTimeout(timer);
    else load();
  });

  load();
})();
