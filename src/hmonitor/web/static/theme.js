// Applies the stored theme before the first paint (loaded in <head>, not deferred) and wires the
// toggle: auto (the system's preference) -> light -> dark.
(function () {
  "use strict";
  var KEY = "hmonitor-theme";
  var root = document.documentElement;

  function stored() {
    try {
      var value = window.localStorage.getItem(KEY);
      return value === "light" || value === "dark" ? value : "auto";
    } catch (e) {
      return "auto"; // storage disabled: follow the system
    }
  }

  function apply(theme) {
    if (theme === "auto") {
      delete root.dataset.theme;
    } else {
      root.dataset.theme = theme;
    }
  }

  apply(stored());
  root.classList.add("js");

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) {
      return;
    }
    var names = { auto: "\u25d0 Auto", light: "\u2600 Light", dark: "\u263e Dark" };
    var order = ["auto", "light", "dark"];
    var current = stored();
    button.textContent = names[current];
    button.hidden = false;
    button.addEventListener("click", function () {
      var next = order[(order.indexOf(current) + 1) % order.length];
      current = next;
      try {
        if (next === "auto") {
          window.localStorage.removeItem(KEY);
        } else {
          window.localStorage.setItem(KEY, next);
        }
      } catch (e) {
        // Not stored, but still applied for this page.
      }
      apply(next);
      button.textContent = names[next];
    });
  });
})();
