// Incidents list: a filter form leaves out the fields left empty ("Any"), so the URL carries only real filters
// (an empty server_id would not be a valid id).
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-drop-empty]")) return;
    form.querySelectorAll("input, select").forEach(function (field) {
      if (field.name && field.type !== "checkbox" && field.value === "") field.disabled = true;
    });
    setTimeout(function () {
      form.querySelectorAll("[disabled]").forEach(function (field) { field.disabled = false; });
    }, 0);
  });
})();
