// Cairn web UI: the copy buttons of secrets shown once.
"use strict";
document.addEventListener("click", function (ev) {
  var b = ev.target.closest("[data-copy]");
  if (!b) return;
  var input = document.getElementById(b.getAttribute("data-copy"));
  var status = document.getElementById("secret-copied");
  if (!input) return;
  input.select();
  var done = function () { if (status) status.textContent = "Copied."; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(done, function () {
      if (status) status.textContent = "Copy failed: select the text and copy it.";
    });
  } else {
    done = document.execCommand("copy") ? done : function () {
      if (status) status.textContent = "Select the text and copy it.";
    };
    done();
  }
});
