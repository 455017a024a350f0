// Live parts replaced by htmx keep the <details data-keep-open> a reader opened (a ping's body, a delivery's
// attempts): their ids are noted before the swap and opened again after it.
(function () {
  "use strict";
  var opened = [];
  document.addEventListener("htmx:beforeSwap", function (event) {
    opened = Array.prototype.map.call(event.target.querySelectorAll("details[data-keep-open][open]"),
                                      function (el) { return el.id; });
  });
  document.addEventListener("htmx:afterSettle", function () {
    opened.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.open = true;
    });
    opened = [];
  });
})();
