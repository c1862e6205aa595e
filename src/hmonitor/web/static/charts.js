// Small SVG time charts for the history pages, without dependencies: lines, shaded areas and
// stacked areas over a time axis, with readable time and unit ticks, gaps where there is no
// data, and a hover cursor with a readout of the time and the values under it.
//
//   HMCharts.draw(container, {
//     since, until,            // the window, Unix seconds
//     series: [{label, key, t: [...], v: [... null where no data], area, dash}],
//     stacked,                 // the series share the first one's times and are stacked
//     yMin, yMax,              // numbers, or null/"auto" to fit the data
//     tick(v), format(v),      // axis label, readout value (with its unit)
//     step,                    // the seconds one point stands for (gaps: see breaksOf)
//     readout, legend,         // elements for the readout line and the legend, optional
//     title,                   // the accessible name of the chart
//   });
//
// Colours come from CSS classes (hmonitor.css: `.k-<key>` sets --k): the page's CSP allows no
// inline style, and SVG attributes carry all the geometry. Times are shown in local time.
var HMCharts = (function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var HEIGHT = 190;
  var M = { top: 10, right: 14, bottom: 22, left: 48 };
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  var DAY = 86400;
  var TIME_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    DAY, 2 * DAY, 7 * DAY, 14 * DAY];
  var MONTH_STEPS = [1, 2, 3, 6, 12];

  function node(tag, attrs, parent) {
    var n = document.createElementNS(NS, tag);
    for (var k in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, k)) n.setAttribute(k, attrs[k]);
    }
    if (parent) parent.append(n);
    return n;
  }

  function pad2(n) { return String(n).padStart(2, "0"); }

  // "2026-11-05 14:32", local time, as the notes page writes times.
  function stamp(t) {
    var d = new Date(t * 1000);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
      pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  }

  function dayLabel(d) { return MONTHS[d.getMonth()] + " " + d.getDate(); }

  // The readout's time: "14:32" today, "Nov 5 14:32" before, with the year when not this one.
  function when(t) {
    var d = new Date(t * 1000);
    var now = new Date();
    var hm = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
    if (d.toDateString() === now.toDateString()) return hm;
    return dayLabel(d) + (d.getFullYear() === now.getFullYear() ? "" : " " + d.getFullYear()) +
      " " + hm;
  }

  // --- ticks ----------------------------------------------------------------------------------

  // 1, 2, 2.5 or 5 times a power of ten, so that `span` has about `count` steps.
  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    if (!(raw > 0)) return 1;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  }

  function valueTicks(lo, hi, count) {
    var step = niceStep(hi - lo, count);
    var out = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Math.round(v / step) * step);
    }
    return out;
  }

  // Ticks at round local times: minutes and hours ("14:30", a date at midnight), days
  // ("Nov 5"), or months ("Nov"; the year in January), at most about maxTicks of them.
  function timeTicks(since, until, maxTicks) {
    var span = until - since;
    var step = null;
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if (span / TIME_STEPS[i] <= maxTicks) { step = TIME_STEPS[i]; break; }
    }
    var out = [];
    var d;
    if (step === null) {
      var months = span / (30.44 * DAY) / Math.max(1, maxTicks);
      var every = MONTH_STEPS.find(function (m) { return m >= months; }) || 12;
      d = new Date(since * 1000);
      d = new Date(d.getFullYear(), d.getMonth() + 1, 1);
      while (d.getTime() / 1000 < until) {
        if (d.getMonth() % every === 0) {
          out.push({ t: d.getTime() / 1000, text: d.getMonth() === 0 ? String(d.getFullYear())
            : MONTHS[d.getMonth()], major: d.getMonth() === 0 });
        }
        d = new Date(d.getFullYear(), d.getMonth() + 1, 1);
      }
      return out;
    }
    if (step >= DAY) {
      var days = step / DAY;
      d = new Date(since * 1000);
      d = new Date(d.getFullYear(), d.getMonth(), d.getDate() + (d.getHours() || d.getMinutes() ? 1 : 0));
      while (d.getTime() / 1000 < until) {
        // Weeks start on Mondays; other steps count days since the epoch, so ticks stay put
        // as the window slides.
        var ordinal = days >= 7 ? (d.getDay() === 1 ? 0 : 1)
          : Math.round((d.getTime() / 1000 - d.getTimezoneOffset() * 60) / DAY) % days;
        if (ordinal === 0) out.push({ t: d.getTime() / 1000, text: dayLabel(d), major: d.getDate() === 1 });
        d = new Date(d.getFullYear(), d.getMonth(), d.getDate() + 1);
      }
      return out;
    }
    var off = new Date(since * 1000).getTimezoneOffset() * 60; // local = UTC - off
    for (var t = Math.ceil((since - off) / step) * step + off; t < until; t += step) {
      d = new Date(t * 1000);
      var midnight = d.getHours() === 0 && d.getMinutes() === 0;
      out.push({ t: t, text: midnight ? dayLabel(d) : pad2(d.getHours()) + ":" + pad2(d.getMinutes()),
        major: midnight });
    }
    return out;
  }

  // --- data -----------------------------------------------------------------------------------

  // Where a line must break: before point i when it is much further from point i-1 than points
  // usually are (the store returns only stretches with samples; a host down for a while leaves
  // a hole in the times), or when either value is null.
  function breaksOf(t, step) {
    var gaps = [];
    for (var i = 1; i < t.length; i++) gaps.push(t[i] - t[i - 1]);
    var sorted = gaps.slice().sort(function (a, b) { return a - b; });
    var typical = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
    var limit = Math.max(3 * typical, 2.5 * (step || 0));
    var out = [false];
    for (var j = 1; j < t.length; j++) out.push(limit > 0 && t[j] - t[j - 1] > limit);
    return { at: out, limit: limit };
  }

  // Runs of drawable points: [[i, j), ...].
  function runs(v, brk) {
    var out = [];
    var i = 0;
    while (i < v.length) {
      if (v[i] === null || v[i] === undefined) { i++; continue; }
      var start = i++;
      while (i < v.length && v[i] !== null && v[i] !== undefined && !brk[i]) i++;
      out.push([start, i]);
    }
    return out;
  }

  function nearest(t, x) {
    var lo = 0;
    var hi = t.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (t[mid] < x) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && x - t[lo - 1] < t[lo] - x) lo--;
    return lo;
  }

  // --- drawing --------------------------------------------------------------------------------

  function draw(container, opts) {
    var state = container.hmChart;
    if (!state) {
      state = container.hmChart = { width: 0, opts: null };
      if (window.ResizeObserver) {
        state.observer = new ResizeObserver(function () {
          if (state.opts && Math.abs(container.clientWidth - state.width) > 1) render(container, state);
        });
        state.observer.observe(container);
      }
    }
    state.opts = opts;
    render(container, state);
  }

  function render(container, state) {
    var o = state.opts;
    var W = Math.max(260, container.clientWidth);
    state.width = container.clientWidth;
    var pw = W - M.left - M.right;
    var ph = HEIGHT - M.top - M.bottom;
    var span = Math.max(1, o.until - o.since);
    var series = o.series.filter(function (s) { return s.t.length; });
    var base = series.length ? series[0] : { t: [], v: [] };
    var brk = breaksOf(base.t, o.step);

    // Stacked: each layer's bottom and top, on the first series' times.
    var lows = [];
    var tops = [];
    if (o.stacked) {
      var acc = base.t.map(function () { return 0; });
      series.forEach(function (s) {
        lows.push(acc.slice());
        acc = acc.map(function (a, i) { return a + (s.v[i] || 0); });
        tops.push(acc.slice());
      });
    }

    var lo = typeof o.yMin === "number" ? o.yMin : Infinity;
    var hi = typeof o.yMax === "number" ? o.yMax : -Infinity;
    if (typeof o.yMin !== "number" || typeof o.yMax !== "number") {
      var dmin = Infinity;
      var dmax = -Infinity;
      (o.stacked ? tops.slice(-1) : series.map(function (s) { return s.v; })).forEach(function (v) {
        v.forEach(function (x) {
          if (x === null || x === undefined) return;
          dmin = Math.min(dmin, x);
          dmax = Math.max(dmax, x);
        });
      });
      if (dmin === Infinity) { dmin = 0; dmax = 1; }
      if (typeof o.yMax !== "number") {
        hi = dmax + (dmax - Math.min(dmin, typeof o.yMin === "number" ? o.yMin : dmin)) * 0.08;
        if (!(hi > 0)) hi = 1;
      }
      if (typeof o.yMin !== "number") {
        lo = dmin - (hi - dmin) * 0.1;
      }
      var s = niceStep(hi - lo, 4);
      if (typeof o.yMax !== "number") hi = Math.ceil(hi / s - 1e-9) * s;
      if (typeof o.yMin !== "number") lo = Math.max(0, Math.floor(lo / s) * s);
    }
    if (hi <= lo) hi = lo + 1;

    function X(t) { return M.left + ((t - o.since) / span) * pw; }
    function Y(v) {
      var c = Math.min(Math.max(v, lo), hi);
      return M.top + ph - ((c - lo) / (hi - lo)) * ph;
    }
    function f1(x) { return Math.round(x * 10) / 10; }

    var svg = node("svg", { width: W, height: HEIGHT, viewBox: "0 0 " + W + " " + HEIGHT,
      class: "chart-svg" + (o.stacked ? " stacked" : ""), role: "img", "aria-label": o.title || "chart" });

    // grid and axes
    var grid = node("g", { class: "grid" }, svg);
    var vticks = valueTicks(lo, hi, 4);
    var vstep = vticks.length > 1 ? vticks[1] - vticks[0] : hi - lo;
    // A fixed top that is no round number (a GPU's 140.4 GiB) is labelled too.
    if (typeof o.yMax === "number" && hi - vticks[vticks.length - 1] > vstep * 0.4) vticks.push(hi);
    vticks.forEach(function (v) {
      var y = f1(Y(v));
      node("line", { x1: M.left, x2: W - M.right, y1: y, y2: y }, grid);
      node("text", { x: M.left - 6, y: y + 3.5, class: "ylab" }, grid).textContent = o.tick ? o.tick(v) : String(v);
    });
    var xt = node("g", { class: "xaxis" }, svg);
    timeTicks(o.since, o.until, Math.max(2, Math.floor(pw / 78))).forEach(function (tk) {
      var x = f1(X(tk.t));
      node("line", { x1: x, x2: x, y1: M.top, y2: M.top + ph, class: tk.major ? "major" : "" }, xt);
      node("text", { x: x, y: HEIGHT - 6, class: tk.major ? "xlab major" : "xlab" }, xt).textContent = tk.text;
    });
    node("line", { x1: M.left, x2: W - M.right, y1: M.top + ph, y2: M.top + ph, class: "base" }, svg);

    // data
    var plot = node("g", { class: "plot" }, svg);
    var layers = [];
    series.forEach(function (s, k) {
      var sb = s === base ? brk : breaksOf(s.t, o.step);
      var dArea = [];
      var dLine = [];
      runs(o.stacked ? tops[k] : s.v, o.stacked ? brk.at : sb.at).forEach(function (r) {
        var top = [];
        var bottom = [];
        for (var i = r[0]; i < r[1]; i++) {
          var x = f1(X(s.t[i]));
          top.push(x + " " + f1(Y(o.stacked ? tops[k][i] : s.v[i])));
          bottom.push(x + " " + f1(Y(o.stacked ? lows[k][i] : Math.max(lo, 0))));
        }
        if (top.length === 1) { // a lone point: a short dash, so it shows
          var xy = top[0].split(" ");
          top = [(+xy[0] - 1.5) + " " + xy[1], (+xy[0] + 1.5) + " " + xy[1]];
          var b = bottom[0].split(" ");
          bottom = [(+b[0] - 1.5) + " " + b[1], (+b[0] + 1.5) + " " + b[1]];
        }
        dLine.push("M" + top.join("L"));
        if (s.area || o.stacked) dArea.push("M" + top.join("L") + "L" + bottom.reverse().join("L") + "Z");
      });
      var cls = "k-" + s.key;
      if (dArea.length) node("path", { d: dArea.join(""), class: "area " + cls }, plot);
      if (dLine.length) node("path", { d: dLine.join(""), class: "line " + cls + (s.dash ? " dash" : "") }, plot);
      layers.push({ s: s, k: k, brk: s === base ? brk : sb });
    });
    if (!series.length) {
      node("text", { x: M.left + pw / 2, y: M.top + ph / 2, class: "nodata" }, svg).textContent =
        o.empty || "No data in this window";
    }

    // hover: a cursor line, a dot per line, and the readout
    var cursor = node("g", { class: "cursor", visibility: "hidden" }, svg);
    var cline = node("line", { y1: M.top, y2: M.top + ph }, cursor);
    var dots = layers.map(function (l) {
      return o.stacked ? null : node("circle", { r: 3, class: "dot k-" + l.s.key }, cursor);
    });
    var hit = node("rect", { x: M.left, y: M.top, width: pw, height: ph, class: "hit" }, svg);

    function valueAt(l, t) {
      var i = nearest(l.s.t, t);
      if (i < 0 || Math.abs(l.s.t[i] - t) > Math.max(l.brk.limit / 2, 1)) return null;
      var v = o.stacked ? l.s.v[i] : l.s.v[i];
      return v === undefined ? null : v;
    }

    function readoutAt(i, live) {
      if (!o.readout) return;
      var t = base.t[i];
      var parts = [];
      if (o.stacked) {
        var shown = layers.map(function (l) { return [l.s.label, l.s.v[i] || 0]; })
          .filter(function (p) { return p[1] > 0; })
          .sort(function (a, b) { return b[1] - a[1]; });
        var total = shown.reduce(function (sum, p) { return sum + p[1]; }, 0);
        shown.slice(0, 4).forEach(function (p) { parts.push(p[0] + " " + o.format(p[1])); });
        if (shown.length > 4) parts.push("+" + (shown.length - 4) + " more");
        parts.push((shown.length ? "total " : "") + o.format(total));
      } else {
        layers.forEach(function (l) {
          var v = valueAt(l, t);
          parts.push((layers.length > 1 ? l.s.label + " " : "") + (v === null ? "\u2014" : o.format(v)));
        });
      }
      o.readout.textContent = (live ? "latest " : "") + when(t) + " \u00b7 " + parts.join(" \u00b7 ");
      o.readout.classList.toggle("live", !!live);
    }

    function idle() {
      cursor.setAttribute("visibility", "hidden");
      if (o.readout) {
        if (base.t.length) readoutAt(base.t.length - 1, true);
        else { o.readout.textContent = ""; o.readout.classList.remove("live"); }
      }
    }

    function move(ev) {
      if (!base.t.length) return;
      var box = svg.getBoundingClientRect();
      var t = o.since + ((ev.clientX - box.left - M.left) / pw) * span;
      var i = nearest(base.t, t);
      var x = f1(X(base.t[i]));
      cline.setAttribute("x1", x);
      cline.setAttribute("x2", x);
      layers.forEach(function (l, k) {
        if (!dots[k]) return;
        var v = valueAt(l, base.t[i]);
        dots[k].setAttribute("visibility", v === null ? "hidden" : "inherit");
        if (v !== null) {
          dots[k].setAttribute("cx", x);
          dots[k].setAttribute("cy", f1(Y(v)));
        }
      });
      cursor.setAttribute("visibility", "visible");
      readoutAt(i, false);
    }

    hit.addEventListener("pointermove", move);
    hit.addEventListener("pointerdown", move);
    hit.addEventListener("pointerleave", idle);
    container.replaceChildren(svg);
    idle();

    if (o.legend) {
      var items = [];
      layers.forEach(function (l) {
        if (!l.s.label) return;
        var item = document.createElement("span");
        var swatch = document.createElement("i");
        swatch.className = "k-" + l.s.key + (l.s.dash ? " dash" : "");
        item.append(swatch, l.s.label);
        items.push(item);
      });
      o.legend.replaceChildren.apply(o.legend, layers.length > 1 ? items : []);
    }
  }

  return { draw: draw, stamp: stamp, when: when, timeTicks: timeTicks, niceStep: niceStep };
})();
