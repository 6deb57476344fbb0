// octonodes: the page's own behaviour, on top of htmx (no inline script:
// the Content-Security-Policy allows scripts from this site only).
//
// - Relative times ("12 s ago") count on by themselves between refreshes,
//   against the server's clock (each live part says what time it was read).
// - A live part is not replaced while someone works in it (a menu open, a
//   field being typed in): the next refresh brings the change.
// - A refresh that fails (a node restarting behind the balancer) leaves the
//   page as it is; the next one will do.
(function () {
  "use strict";
  var skew = 0;

  function ago(seconds) {
    if (seconds < 0) return "just now";
    var units = [["d", 86400], ["h", 3600], ["min", 60]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][1]) return Math.floor(seconds / units[i][1]) + " " + units[i][0] + " ago";
    }
    return Math.floor(seconds) + " s ago";
  }

  function readClock() {
    var live = document.querySelector("[data-now]");
    if (live) skew = Date.parse(live.getAttribute("data-now")) - Date.now();
  }

  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var then = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(then)) el.textContent = ago((now - then) / 1000);
    });
  }

  function busy(target) {
    if (!target || !target.hasAttribute("data-live")) return false;
    if (target.querySelector("details[open]")) return true;
    var active = document.activeElement;
    return !!(active && target.contains(active) && active.matches("input, select, textarea"));
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.hasAttribute("data-live") && (event.detail.xhr.status >= 400 || busy(target))) {
      event.detail.shouldSwap = false;
      event.detail.isError = false;
    }
  });
  document.addEventListener("htmx:sendError", function (event) {
    event.preventDefault && event.preventDefault();
  });
  document.addEventListener("htmx:afterSettle", function () {
    readClock();
    var log = document.getElementById("log");
    if (log && log.dataset.follow !== "no") log.scrollTop = log.scrollHeight;
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      menu.removeAttribute("open");
      menu.querySelector("summary").focus();
    });
  });
  document.addEventListener("DOMContentLoaded", function () { readClock(); tick(); });
  setInterval(tick, 1000);
})();
