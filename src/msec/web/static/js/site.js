// Small behaviours of every page; no inline scripts (the pages' Content-Security-Policy forbids them).
(function () {
  "use strict";
  // Forms that destroy something ask first: <form data-confirm="question">.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
  // A value that changed live flashes once (reduced motion: see site.css).
  document.addEventListener("htmx:sseMessage", function (event) {
    var target = event.detail && event.detail.elt;
    if (target && target.classList) {
      target.classList.remove("flash");
      void target.offsetWidth;
      target.classList.add("flash");
    }
  });
})();
// <button data-print> prints the page (the QR sheet).
document.addEventListener("click", function (event) {
  var button = event.target instanceof Element ? event.target.closest("[data-print]") : null;
  if (button) {
    window.print();
  }
});
