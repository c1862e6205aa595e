// The JSON API as the pages use it: one fetch helper for every page script (loaded first).
// A lost session (401) goes back to the login page, then returns here.
(function () {
  "use strict";

  // params: an object or URLSearchParams; signal: an AbortSignal, to cancel a stale request.
  function getJSON(path, params, signal) {
    var url = params ? path + "?" + new URLSearchParams(params).toString() : path;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" },
                        signal: signal })
      .then(function (resp) {
        if (resp.status === 401) {
          location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
          throw new Error("logged out");
        }
        if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
        return resp.json();
      });
  }

  window.hmonitorApi = { getJSON: getJSON };
})();
