// Keeps the overview live: fetches /api/v1/hosts (plus notes and notice) every few seconds and
// rebuilds the host panels with the same markup and rules as the server's templates
// (views.py, _host.html). Filters work at once, without a request, and are kept in the URL.
// All text goes in through textContent, never innerHTML: notes are user input.
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var GIB = 1073741824;
  var MIB = 1048576;
  var FREE_UTIL_PCT = 5;
  var FREE_MEM_PCT = 5;
  var DISK_WARN_PCT = 90;
  var EXPIRY_SOON_S = 14 * 86400;
  var LOST_PREFIX = "GPU lost:";
  var SIMULATED_PREFIX = "Simulated ";

  var grid = document.getElementById("hosts");
  var form = document.getElementById("filters");
  if (!grid || !form) {
    return;
  }
  var updated = document.getElementById("updated");
  var showing = document.getElementById("showing");

  var latest = null; // last /api/v1/hosts answer
  var notesByHost = {};
  var fetchedAt = 0; // performance.now() of that answer, to age "last seen" between fetches
  var cache = new Map(); // host name -> {key, node}: unchanged hosts keep their DOM nodes
  var openStale = new Set(); // hosts whose "last known state" the user opened
  var timer = null;
  var inFlight = false;

  // --- small DOM helper -------------------------------------------------------------------

  function el(tag, className) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) {
        continue;
      }
      node.append(child); // strings become text nodes
    }
    return node;
  }

  // --- the rules, as in views.py ----------------------------------------------------------

  function ago(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  // Rounded half up, as views.py does.
  function r1(x) { return (Math.floor(x * 10 + 0.5) / 10).toFixed(1); }
  function r0(x) { return String(Math.floor(x + 0.5)); }

  function sizeText(n) {
    if (n >= 10 * GIB) return r0(n / GIB) + " GiB";
    if (n >= GIB) return r1(n / GIB) + " GiB";
    return Math.floor(n / MIB) + " MiB";
  }

  function expiry(exp, now) {
    if (exp === 0) return ["unknown", "exp-unknown"];
    if (exp === 1) return ["never", "exp-never"];
    if (exp <= now) return ["expired", "exp-expired"];
    var text = new Date(exp * 1000).toISOString().slice(0, 10); // UTC, as shadow's days are
    return [text, exp - now < EXPIRY_SOON_S ? "exp-soon" : ""];
  }

  function userLabel(p) {
    return p.username || (p.uid >= 0 ? "uid " + p.uid : "unknown"); // as wire.owner_label
  }

  function isLost(g) {
    return g.name.indexOf(LOST_PREFIX) === 0;
  }

  function isFree(g) {
    if (isLost(g) || g.procs.length || g.utilization >= FREE_UTIL_PCT) return false;
    return g.mem_total > 0 && g.mem_used * 100 < FREE_MEM_PCT * g.mem_total;
  }

  function shortModel(name) {
    ["Simulated ", "NVIDIA ", "GeForce ", "Tesla "].forEach(function (prefix) {
      if (name.indexOf(prefix) === 0) name = name.slice(prefix.length);
    });
    return name;
  }

  function pct(used, total) {
    return total ? Math.floor((used * 100) / total + 0.5) : 0;
  }

  function procsView(g, now) {
    var byUser = new Map();
    g.procs.forEach(function (p) {
      var user = userLabel(p);
      if (!byUser.has(user)) byUser.set(user, []);
      byUser.get(user).push(p);
    });
    var out = [];
    byUser.forEach(function (procs, user) {
      var exp = expiry(procs[0].expiration, now);
      out.push({
        user: user,
        label: procs.length > 1 ? user + " \u00d7" + procs.length : user,
        mem: sizeText(procs.reduce(function (sum, p) { return sum + p.mem; }, 0)),
        expText: exp[0],
        expClass: exp[1],
        title: procs.map(function (p) { return "pid " + p.pid + " " + p.basename; }).join(", "),
        pids: procs.map(function (p) { return p.pid; }).join(" "),
      });
    });
    return out;
  }

  function gpuView(g, now) {
    var lost = isLost(g);
    var used = g.mem_used / GIB;
    var total = g.mem_total / GIB;
    return {
      index: g.id,
      model: lost ? "lost" : shortModel(g.name),
      name: g.name,
      util: g.utilization,
      memUsed: used,
      memTotal: total,
      memText: r1(used) + "/" + r0(total) + " GiB",
      temp: g.temp,
      fan: g.fanspeed ? g.fanspeed + "%" : "\u2014",
      free: isFree(g),
      lost: lost,
      procs: lost ? [] : procsView(g, now),
    };
  }

  function hostView(h, now) {
    var info = h.info;
    var gpus = info ? info.gpus.map(function (g) { return gpuView(g, now); }) : [];
    return {
      name: h.name,
      address: h.address,
      up: h.up,
      error: h.error,
      seen: h.last_seen === null ? "never seen" : "last seen " + ago(now - h.last_seen),
      ip: info ? info.ip : "",
      hostname: info ? info.hostname : "",
      simulated: !!info && info.gpus.some(function (g) { return g.name.indexOf(SIMULATED_PREFIX) === 0; }),
      stale: !h.up && !!info,
      gpus: gpus,
      disks: info ? info.disks.map(function (d) {
        var p = pct(d.used, d.total);
        return {
          mount: d.mount || d.device,
          device: d.device,
          pct: p,
          text: sizeText(d.used) + " of " + sizeText(d.total),
          warn: p >= DISK_WARN_PCT,
        };
      }) : [],
      notes: (notesByHost[h.name] || []).map(function (n) { return [n.user, n.note]; }),
      truncated: h.truncated || [],
      nGpus: gpus.length,
      nFree: h.up ? gpus.filter(function (g) { return g.free; }).length : 0,
    };
  }

  function applyFilters(v, f) {
    if (f.host) {
      var hneedle = f.host.toLowerCase();
      if (![v.name, v.ip, v.hostname].some(function (s) { return s.toLowerCase().indexOf(hneedle) >= 0; })) {
        return null;
      }
    }
    if (!f.user && !f.free) return v;
    if (!v.up) return null;
    var gpus = v.gpus;
    if (f.free) gpus = gpus.filter(function (g) { return g.free; });
    if (f.user) {
      var uneedle = f.user.toLowerCase();
      gpus = gpus.filter(function (g) {
        g.procs.forEach(function (p) { p.hit = p.user.toLowerCase().indexOf(uneedle) >= 0; });
        return g.procs.some(function (p) { return p.hit; });
      });
    }
    if (!gpus.length) return null;
    v.gpus = gpus;
    return v;
  }

  // --- markup, as in _host.html -----------------------------------------------------------

  function meter(max, value) {
    var m = document.createElement("meter");
    m.max = max;
    m.value = value;
    return m;
  }

  function hostUrl(name) {
    return "/host/" + encodeURIComponent(name);
  }

  function gpuRow(g, host) {
    var tr;
    if (g.lost) {
      var cell = el("td", null, g.name);
      cell.colSpan = 6;
      tr = el("tr", "lost", el("td", null, String(g.index)), cell);
    } else {
      var link = el("a", null, g.model);
      link.href = hostUrl(host) + "/gpu/" + g.index; // the GPU's history, as views.gpu_rows
      var model = el("td", null, link);
      model.title = g.name;
      var procs = el("td");
      g.procs.forEach(function (p) {
        var exp = p.expClass ? el("em", p.expClass, p.expText) : p.expText;
        var chip = el("span", p.hit ? "hit" : null, p.label + " (" + p.mem + ", ", exp, ")");
        chip.title = p.title; // pids and commands: only here, to keep the server's HTML small
        chip.dataset.pids = p.pids; // for the idle-process badges (overview-history.js)
        procs.append(chip);
      });
      if (!g.procs.length) {
        procs.append(g.free ? el("i", "idle", "free") : el("i", "noproc", "no processes"));
      }
      tr = el("tr", g.free ? "free" : null,
        el("td", null, String(g.index)),
        model,
        el("td", null, meter(100, g.util), " " + g.util + "%"),
        el("td", null, meter(g.memTotal, g.memUsed), " " + g.memText),
        el("td", null, g.temp + "\u00b0C"),
        el("td", null, g.fan),
        procs,
        el("td"));
    }
    tr.dataset.gpu = String(g.index);
    return tr;
  }

  function gpuTable(v) {
    var head = el("tr");
    ["#", "Model", "Util", "Memory", "Temp", "Fan", "Processes", ""].forEach(function (label) {
      head.append(el("th", null, label));
    });
    var body = el("tbody");
    v.gpus.forEach(function (g) { body.append(gpuRow(g, v.name)); });
    return el("table", "gpus", el("thead", null, head), body);
  }

  function hostPanel(v) {
    var meta = v.ip || v.address;
    if (v.hostname && v.hostname !== v.name) meta += " \u00b7 " + v.hostname;
    var head = el("header", "hh",
      el("span", "state", v.up ? "up" : "down"),
      el("h2", null, v.name),
      v.simulated ? el("span", "tag", "simulated") : null,
      v.truncated.length ? el("span", "tag cut", "truncated") : null,
      el("span", "meta", meta),
      v.up ? el("span", "freec" + (v.nFree ? " some" : ""), v.nFree + "/" + v.nGpus + " free") : null);
    var panel = el("article", "host " + (v.up ? "up" : "down"), head);
    panel.dataset.host = v.name;
    if (v.error) {
      panel.append(el("p", "err", v.error + (v.up ? "" : " \u00b7 " + v.seen)));
    }
    if (v.truncated.length) {
      panel.append(el("p", "cut", "The agent sent more than the dashboard keeps: " +
        v.truncated.join("; ") + "."));
    }
    if (v.notes.length) {
      var list = el("ul", "notes");
      v.notes.forEach(function (n) { list.append(el("li", null, el("b", null, n[0]), " " + n[1])); });
      panel.append(list);
    }
    if (v.gpus.length) {
      if (v.stale) {
        var details = el("details", "stale", el("summary", null, "last known state"), gpuTable(v));
        details.open = openStale.has(v.name);
        details.addEventListener("toggle", function () {
          if (details.open) openStale.add(v.name); else openStale.delete(v.name);
        });
        panel.append(details);
      } else {
        panel.append(gpuTable(v));
      }
    }
    if (v.disks.length) {
      var disks = el("ul", "disks");
      v.disks.forEach(function (d) {
        var li = el("li", d.warn ? "warn" : null, el("span", null, d.mount), meter(100, d.pct),
          " " + d.pct + "%");
        li.title = d.device + ": " + d.text;
        disks.append(li);
      });
      panel.append(disks);
    }
    return panel;
  }

  // --- filters ------------------------------------------------------------------------------

  function currentFilters() {
    return {
      user: form.elements.user.value.trim(),
      host: form.elements.host.value.trim(),
      free: form.elements.free.checked,
    };
  }

  function syncUrl(f) {
    // Other parameters (the sparkline window) belong to other scripts: kept as they are.
    var q = new URLSearchParams(location.search);
    ["user", "host", "free"].forEach(function (key) { q.delete(key); });
    if (f.user) q.set("user", f.user);
    if (f.host) q.set("host", f.host);
    if (f.free) q.set("free", "1");
    var query = q.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
  }

  // --- rendering ----------------------------------------------------------------------------

  function setText(id, value) {
    var node = document.getElementById(id);
    if (node) node.textContent = String(value);
  }

  function renderSummary(hosts) {
    var s = { up: 0, down: 0, gpus: 0, free: 0, busy: 0, lost: 0 };
    var users = new Set();
    hosts.forEach(function (h) {
      if (!h.up) { s.down++; return; }
      s.up++;
      if (!h.info) return;
      h.info.gpus.forEach(function (g) {
        s.gpus++;
        if (isLost(g)) s.lost++;
        else if (isFree(g)) s.free++;
        else s.busy++;
        g.procs.forEach(function (p) { users.add(userLabel(p)); });
      });
    });
    setText("s-up", s.up);
    setText("s-down", s.down);
    setText("s-gpus", s.gpus);
    setText("s-free", s.free);
    setText("s-busy", s.busy);
    setText("s-lost", s.lost);
    setText("s-users", users.size);
    document.getElementById("s-down-wrap").classList.toggle("bad", s.down > 0);
    document.getElementById("s-lost-wrap").hidden = s.lost === 0;
  }

  function render() {
    if (!latest) return;
    var f = currentFilters();
    var now = latest.generated_at + (performance.now() - fetchedAt) / 1000;
    var nodes = [];
    var seen = new Set();
    latest.hosts.forEach(function (h) {
      var v = applyFilters(hostView(h, now), f);
      if (!v) return;
      seen.add(v.name);
      var key = JSON.stringify(v);
      var hit = cache.get(v.name);
      if (!hit || hit.key !== key) {
        hit = { key: key, node: hostPanel(v) };
        cache.set(v.name, hit);
      }
      nodes.push(hit.node);
    });
    cache.forEach(function (_, name) { if (!seen.has(name)) cache.delete(name); });
    if (!nodes.length) {
      nodes.push(el("p", "empty", latest.hosts.length ? "No host matches the filters."
        : "No hosts configured: add them to servers in settings.py."));
    }
    var same = nodes.length === grid.children.length &&
      nodes.every(function (n, i) { return grid.children[i] === n; });
    if (!same) grid.replaceChildren.apply(grid, nodes);
    renderSummary(latest.hosts);
    showing.textContent = (nodes[0].tagName === "P" ? 0 : nodes.length) + " of " + latest.hosts.length + " hosts";
    // For later parts (e.g. sparklines in each row's .c-s cell).
    grid.dispatchEvent(new CustomEvent("hmonitor:rendered", { detail: latest }));
  }

  function renderNotice(notice) {
    var box = document.getElementById("notice");
    if (!box) return;
    document.getElementById("notice-text").textContent = notice.notice;
    box.hidden = !notice.notice;
  }

  // --- refreshing -------------------------------------------------------------------------

  var getJSON = window.hmonitorApi.getJSON;

  function refresh() {
    clearTimeout(timer);
    if (inFlight) return;
    inFlight = true;
    Promise.all([getJSON("/api/v1/hosts"), getJSON("/api/v1/notes"), getJSON("/api/v1/notice")])
      .then(function (answers) {
        latest = answers[0];
        fetchedAt = performance.now();
        notesByHost = {};
        answers[1].notes.forEach(function (n) {
          (notesByHost[n.host] = notesByHost[n.host] || []).push(n);
        });
        render();
        renderNotice(answers[2]);
        updated.textContent = "live \u00b7 updated " + new Date().toLocaleTimeString();
        updated.classList.remove("bad");
      })
      .catch(function (err) {
        updated.textContent = "not updated: " + err.message + " (retrying)";
        updated.classList.add("bad");
      })
      .finally(function () {
        inFlight = false;
        if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
      });
  }

  var typing = null;
  form.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(function () {
      syncUrl(currentFilters());
      render();
    }, 120);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault(); // filtering happens in place
    syncUrl(currentFilters());
    render();
  });
  document.addEventListener("visibilitychange", function () {
    // No polling in a background tab; catch up at once when it comes back.
    if (!document.hidden) refresh();
    else clearTimeout(timer);
  });

  refresh();
})();
