// The datasets page: the paste box's example follows the kind of lines chosen.
(function () {
  "use strict";
  const kind = document.getElementById("paste-kind");
  const text = document.getElementById("paste-text");
  if (!kind || !text) return;
  kind.addEventListener("change", function () {
    const example = text.dataset["placeholder" + kind.value.charAt(0).toUpperCase() + kind.value.slice(1)];
    if (example !== undefined) text.placeholder = example;
  });
})();
