// The Playground: while the two versions answer, say so and keep the form from being sent twice.
(function () {
  "use strict";
  const form = document.getElementById("playground-form");
  const spinner = document.getElementById("playground-spinner");
  const send = document.getElementById("playground-send");
  if (!form || !spinner) return;
  form.addEventListener("submit", function (event) {
    if (form.getAttribute("aria-busy") === "true") {
      event.preventDefault();
      return;
    }
    form.setAttribute("aria-busy", "true");
    spinner.hidden = false;
    if (send) send.disabled = true;
  });
  // a page restored from the back/forward cache must not stay busy
  window.addEventListener("pageshow", function () {
    form.removeAttribute("aria-busy");
    spinner.hidden = true;
    if (send) send.disabled = false;
  });
})();
