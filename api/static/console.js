// Pillivery console: refreshes the parts of a page marked `data-refresh` in place. The
// pages work without it; it only saves operators a reload.
(function () {
  "use strict";
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseInt(el.getAttribute("data-interval"), 10) || 5000;
    var busy = false;
    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          // A redirect means the session ended: the reload shows the sign-in page.
          if (r.redirected || r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            el.innerHTML = html;
            el.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { busy = false; });
    }
    window.setInterval(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var els = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < els.length; i++) refresh(els[i]);
  });
})();
