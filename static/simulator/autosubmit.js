// Submits the simulator's return form (<form data-autosubmit [data-delay=ms]>) without a click.
// A static file rather than an inline script, so that a strict Content-Security-Policy allows it.
(function () {
  var forms = document.querySelectorAll("form[data-autosubmit]");
  Array.prototype.forEach.call(forms, function (form) {
    var delay = parseInt(form.getAttribute("data-delay") || "0", 10);
    window.setTimeout(function () { form.submit(); }, delay);
  });
})();
