// Keeps a waiting page up to date without reloading it: a <meta refresh> would make a screen reader
// start the page again every few seconds. The element with data-status-url (the order's result,
// the console's timeline) asks that URL now and then for a one-word state; when it differs from
// data-state, the page is fetched again and its parts are put in place. The live region
// ([data-live-region]) keeps its element and only takes the new content, so it is announced.
// Without JavaScript the "Check again" link ([data-check-now]) reloads the page instead.
(function () {
  "use strict";
  var root = document.querySelector("[data-status-url]");
  if (!root || !window.fetch || !window.DOMParser) { return; }
  var DELAYS = [2000, 2000, 3000, 3000, 5000, 5000, 10000]; // then every 15 s
  var tries = 0;
  var timer = null;
  var busy = false;

  function say(selector, attribute) {
    var element = root.querySelector(selector);
    if (element && element.getAttribute(attribute)) { element.textContent = element.getAttribute(attribute); }
  }

  function schedule() {
    clearTimeout(timer);
    if (!root.hasAttribute("data-status-url")) { return; } // final: nothing more to wait for
    timer = setTimeout(check, tries < DELAYS.length ? DELAYS[tries] : 15000);
    tries += 1;
  }

  function get(url, type) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: type } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return type === "application/json" ? response.json() : response.text();
      });
  }

  function check(byHand) {
    if (busy) { return; }
    busy = true;
    clearTimeout(timer);
    get(root.getAttribute("data-status-url"), "application/json")
      .then(function (status) {
        if (status.state !== root.getAttribute("data-state")) { return update(); }
        if (byHand) { say("[data-unchanged]", "data-unchanged"); }
      })
      .catch(function () { /* offline for a moment: the next try will tell */ })
      .then(function () { busy = false; schedule(); });
  }

  function update() {
    return get(window.location.href, "text/html").then(function (html) {
      var page = new DOMParser().parseFromString(html, "text/html");
      var fresh = page.getElementById(root.id);
      if (!fresh) { window.location.reload(); return; }
      var region = root.querySelector("[data-live-region]");
      var freshRegion = fresh.querySelector("[data-live-region]");
      var hadFocus = root.contains(document.activeElement);
      // Everything but the live region is replaced as it comes; the region takes the new words.
      Array.prototype.slice.call(root.children).forEach(function (child) {
        if (child !== region) { root.removeChild(child); }
      });
      var before = true;
      Array.prototype.slice.call(fresh.children).forEach(function (child) {
        if (child === freshRegion) { before = false; return; }
        var copy = document.importNode(child, true);
        if (before && region) { root.insertBefore(copy, region); } else { root.appendChild(copy); }
      });
      if (region && freshRegion) { region.replaceChildren.apply(region, Array.prototype.slice.call(freshRegion.childNodes)); }
      root.className = fresh.className;
      ["data-status-url", "data-state"].forEach(function (name) {
        if (fresh.hasAttribute(name)) { root.setAttribute(name, fresh.getAttribute(name)); } else { root.removeAttribute(name); }
      });
      document.title = page.title;
      if (hadFocus && !root.contains(document.activeElement)) {
        // The focused button (Check again) is gone: the keyboard goes on from the next thing to do.
        var next = root.querySelector("button, a[href]");
        if (next) { next.focus(); }
      }
      start();
    });
  }

  function start() {
    say("[data-when-live]", "data-when-live");
    var button = root.querySelector("[data-check-now]");
    if (button) {
      button.addEventListener("click", function (event) { event.preventDefault(); check(true); });
    }
  }

  start();
  schedule();
})();
