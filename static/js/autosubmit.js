// Submits the redirect form at once; without JavaScript the shopper presses its button instead.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("form[data-autosubmit]");
  if (form) { form.submit(); }
});
