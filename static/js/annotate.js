// Keyboard shortcuts and timing for the annotation page. The page works
// without this file: every action is a plain form.
(function () {
  "use strict";

  const KEYS = {
    "1": "left", ArrowLeft: "left",
    "2": "right", ArrowRight: "right",
    "3": "tie", t: "tie",
    "4": "both_bad", b: "both_bad",
  };

  function markShown() {
    const task = document.getElementById("task");
    if (task) task.dataset.shownAt = String(performance.now());
  }

  function click(selector) {
    const el = document.querySelector(selector);
    if (el && !el.disabled) el.click();
    return Boolean(el);
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]")) return;
    const help = document.getElementById("help");
    if (event.key === "?") {
      if (help.open) help.close(); else help.showModal();
      event.preventDefault();
      return;
    }
    if (help && help.open) return;
    const choice = KEYS[event.key];
    let handled = false;
    if (choice) handled = click(`#judge-form button[data-choice="${choice}"]`);
    else if (event.key === "s") handled = click("#skip-button");
    else if (event.key === "u") handled = click("#undo-button");
    if (handled) event.preventDefault();
  });

  document.addEventListener("click", function (event) {
    if (event.target instanceof HTMLElement && event.target.closest("[data-help]")) {
      document.getElementById("help").showModal();
    }
  });

  // Time from showing a pair to judging it, written into the form just before
  // it is sent (capture phase: before htmx reads the form).
  document.addEventListener("click", function (event) {
    const button = event.target instanceof Element && event.target.closest("#judge-form button[type=submit]");
    if (!button) return;
    const task = document.getElementById("task");
    const shownAt = Number(task && task.dataset.shownAt);
    const field = button.form && button.form.elements.namedItem("duration_ms");
    if (shownAt && field) field.value = String(Math.round(performance.now() - shownAt));
  }, true);

  document.addEventListener("htmx:afterSwap", markShown);
  document.addEventListener("DOMContentLoaded", markShown);
})();
