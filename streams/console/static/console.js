// borderline reviewer console: keyboard first. A key per answer (shown on its button), s skips,
// u undoes the last label, r looks for a new task. A held-down key repeats nothing (event.repeat
// is ignored), and nothing is sent while a request is in flight (hx-sync drops it too; the
// server accepts one answer per lease in any case). A key pressed the instant a task is swapped in
// is not lost: the task is wired before its button is clicked (htmx would otherwise wire it only
// when it settles), and each form also posts without htmx (with its CSRF field), the server then
// redirecting to the next task.
(function () {
  "use strict";
  let busy = false;
  document.addEventListener("htmx:beforeRequest", function () { busy = true; });
  document.addEventListener("htmx:afterRequest", function () { busy = false; });
  document.addEventListener("keydown", function (event) {
    if (event.repeat || busy || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
    const task = document.getElementById("task");
    if (!task) return;
    const key = event.key.toLowerCase();
    if (key === "r") { window.location.reload(); return; }
    htmx.process(task);  // wired now if it has not settled yet (a no-op once it has)
    if (key === "u") {
      const undo = document.getElementById("undo-form");
      if (undo) { busy = true; htmx.trigger(undo, "submit"); }
      return;
    }
    const button = task.querySelector('button[data-key="' + CSS.escape(key) + '"]');
    if (button) {
      event.preventDefault();
      busy = true;
      button.click();
    }
  });
})();
