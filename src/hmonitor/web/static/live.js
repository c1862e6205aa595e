// Keeps the overview live. Every few seconds it asks /live for the parts of the page that changed
// since its last answer and swaps in the HTML the server rendered: host panels or cluster-map
// tiles (elements with data-k), the summary and the alerts. It renders nothing itself: every rule
// of what is shown lives on the server (pages/). Filters ask for the new view at once and are
// kept in the URL. Over the cluster map, pointing at a tile shows that host's panel (/card/...).
(function () {
  "use strict";

  var grid = document.getElementById("hosts");
  var form = document.getElementById("filters");
  if (!grid || !form) {
    return;
  }
  var summary = document.getElementById("summary");
  var alerts = document.getElementById("alerts");
  var updated = document.getElementById("updated");
  var REFRESH_MS = Number(grid.dataset.refresh || 5) * 1000;
  var token = grid.dataset.token || "";
  var timer = null;
  var inFlight = null; // the AbortController of the request under way
  var getJSON = window.hmonitorApi.getJSON;

  // --- swapping server-rendered HTML in ---------------------------------------------------

  var parser = document.createElement("template");

  // The units of an answer, parsed in one go (one parse of many fragments is far cheaper than
  // one per fragment): key -> element.
  function parseUnits(units) {
    var keys = Object.keys(units);
    parser.innerHTML = keys.map(function (k) { return units[k]; }).join("");
    var parsed = new Map();
    var nodes = parser.content.children;
    for (var i = 0; i < nodes.length; i++) parsed.set(nodes[i].dataset.k, nodes[i]);
    return parsed;
  }

  function keyed() {
    var byKey = new Map();
    for (var i = 0; i < grid.children.length; i++) {
      var node = grid.children[i];
      if (node.dataset.k !== undefined) byKey.set(node.dataset.k, node);
    }
    return byKey;
  }

  // What the user opened (a host's "last known state") stays open across a swap.
  function keepOpen(old, fresh) {
    var was = old.querySelectorAll("details");
    var now = fresh.querySelectorAll("details");
    for (var i = 0; i < was.length && i < now.length; i++) now[i].open = was[i].open;
  }

  function empty(total) {
    var p = document.createElement("p");
    p.className = "empty";
    p.textContent = total ? "No host matches the filters."
      : "No hosts configured: add them to servers in settings.py.";
    return p;
  }

  function apply(data, full) {
    var byKey = keyed();
    var fresh = parseUnits(data.units);
    if (grid.className !== data.mode) grid.className = data.mode;
    if (data.order) {
      var nodes = [];
      for (var i = 0; i < data.order.length; i++) {
        var k = data.order[i];
        var node = fresh.get(k) || byKey.get(k);
        if (!node) { // a unit the page never had: start over with everything
          token = "";
          return false;
        }
        if (fresh.has(k) && byKey.has(k)) keepOpen(byKey.get(k), node);
        nodes.push(node);
      }
      if (!nodes.length) nodes.push(empty(data.total));
      grid.replaceChildren.apply(grid, nodes);
    } else {
      fresh.forEach(function (node, k) {
        var old = byKey.get(k);
        if (!old) return;
        keepOpen(old, node);
        old.replaceWith(node);
      });
    }
    if (data.summary !== undefined) summary.innerHTML = data.summary;
    if (data.alerts !== undefined) {
      alerts.innerHTML = data.alerts;
      alerts.hidden = !data.alerts;
    }
    var notice = document.getElementById("notice");
    if (notice) {
      document.getElementById("notice-text").textContent = data.notice;
      notice.hidden = !data.notice;
    }
    token = data.token;
    grid.dispatchEvent(new CustomEvent("hmonitor:rendered", { detail: { full: full } }));
    return true;
  }

  // --- asking for changes -------------------------------------------------------------------

  function filters() {
    var q = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (name !== "window" && value !== "" && !(name === "view" && value === "auto")) {
        q.set(name, value);
      }
    });
    return q;
  }

  function syncUrl() {
    var q = filters();
    var w = new URLSearchParams(location.search).get("window");
    if (w) q.set("window", w);
    var query = q.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
  }

  function refresh(full) {
    clearTimeout(timer);
    if (inFlight) inFlight.abort();
    var controller = new AbortController();
    inFlight = controller;
    var q = filters();
    if (!full) q.set("since", token);
    var started = performance.now();
    getJSON("/live", q, controller.signal)
      .then(function (data) {
        var t0 = performance.now();
        if (!apply(data, !!full)) {
          refresh(true);
          return;
        }
        // Read by the browser tests and bench/dashboard.py.
        performance.measure("hmonitor:refresh", { start: t0, end: performance.now() });
        performance.measure("hmonitor:refresh-total", { start: started, end: performance.now() });
        updated.textContent = "live \u00b7 as of " + data.as_of;
        updated.classList.remove("bad");
      })
      .catch(function (err) {
        if (controller.signal.aborted) return;
        updated.textContent = "not updated: " + err.message + " (retrying)";
        updated.classList.add("bad");
      })
      .finally(function () {
        if (inFlight !== controller) return;
        inFlight = null;
        if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
      });
  }

  var typing = null;
  form.addEventListener("input", function (event) {
    if (event.target.name === "window") return; // the sparklines' own choice
    clearTimeout(typing);
    typing = setTimeout(function () {
      syncUrl();
      refresh(true);
    }, 250);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    syncUrl();
    refresh(true);
  });
  document.addEventListener("visibilitychange", function () {
    // No polling in a background tab; catch up at once when it comes back.
    if (!document.hidden) refresh();
    else clearTimeout(timer);
  });

  // --- the host card over the cluster map -------------------------------------------------

  var card = document.createElement("div");
  card.className = "card";
  card.hidden = true;
  document.body.append(card);
  var cardFor = null;
  var cardTimer = null;
  var cards = new Map(); // host -> {at, html}: one request per host per refresh period

  function place(tile) {
    var r = tile.getBoundingClientRect();
    var width = Math.min(640, window.innerWidth - 16);
    card.style.width = width + "px";
    var left = Math.min(Math.max(8, r.left), window.innerWidth - width - 8);
    card.style.left = left + window.scrollX + "px";
    var below = r.bottom + 6;
    var h = card.offsetHeight;
    var top = below + h > window.innerHeight && r.top - 6 - h > 0 ? r.top - 6 - h : below;
    card.style.top = top + window.scrollY + "px";
  }

  function showCard(tile) {
    var host = tile.dataset.k;
    cardFor = host;
    var hit = cards.get(host);
    var fresh = hit && performance.now() - hit.at < REFRESH_MS;
    var shown = fresh ? Promise.resolve(hit.html)
      : fetch("/card/" + encodeURIComponent(host), { credentials: "same-origin" })
        .then(function (resp) { return resp.ok ? resp.text() : ""; });
    shown.then(function (html) {
      if (cardFor !== host || !html) return;
      cards.set(host, { at: performance.now(), html: html });
      card.innerHTML = html;
      card.hidden = false;
      place(tile);
    }).catch(function () { /* no card this time */ });
  }

  function hideCard() {
    clearTimeout(cardTimer);
    cardFor = null;
    card.hidden = true;
  }

  function tileOf(event) {
    return event.target.closest ? event.target.closest(".map > .tile") : null;
  }

  grid.addEventListener("mouseover", function (event) {
    var tile = tileOf(event);
    if (!tile || tile.dataset.k === cardFor) return;
    clearTimeout(cardTimer);
    cardTimer = setTimeout(function () { showCard(tile); }, 200);
  });
  grid.addEventListener("mouseout", function (event) {
    var tile = tileOf(event);
    if (tile && !tile.contains(event.relatedTarget)) hideCard();
  });
  grid.addEventListener("focusin", function (event) {
    var tile = tileOf(event);
    if (tile) showCard(tile);
  });
  grid.addEventListener("focusout", hideCard);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") hideCard();
  });

  // At once: cheap when nothing changed since the page was rendered, and it says "live".
  refresh();
})();
