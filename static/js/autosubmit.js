// Takes the shopper back to the shop without a click: submits <form data-autosubmit> and follows
// <a data-autosubmit>, each after its data-delay (ms). Without JavaScript the shopper presses the
// button or the link. A static file rather than an inline script (or a <meta refresh>, which restarts
// a screen reader), so that a strict Content-Security-Policy allows it.
(function () {
  var targets = document.querySelectorAll("form[data-autosubmit], a[data-autosubmit]");
  Array.prototype.forEach.call(targets, function (target) {
    var delay = parseInt(target.getAttribute("data-delay") || "0", 10);
    window.setTimeout(function () {
      if (target.tagName === "FORM") { target.submit(); } else { window.location.assign(target.href); }
    }, delay);
  });
})();
