// HostAtlas dashboard: the little script the server-rendered pages need (no inline code: the CSP forbids it).
// - <time datetime> shown in the viewer's time zone; relative times ("3 min ago") kept current.
// - Charts: <div class="chart" data-src> drawn with uPlot from {"x": [unix s], "series": [{"label", "values"}]},
//   refetched every data-refresh seconds while data-live; destroyed when htmx swaps them out (no leak overnight).
// - [data-copy] buttons, [data-autosubmit] selects, forms with [data-confirm], <details data-keep-open>.
(function () {
  "use strict";
  var refreshSeconds = Number(document.body.dataset.refresh || 15);
  var charts = new Set(); // live chart elements; each holds its uPlot and timer on el._hostatlas

  var dateTime = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});
  var dateOnly = new Intl.DateTimeFormat(undefined, {dateStyle: "medium"});
  var relative = new Intl.RelativeTimeFormat(undefined, {numeric: "auto"});

  function ago(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    var units = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600], ["minute", 60]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) return relative.format(Math.round(seconds / units[i][1]), units[i][0]);
    }
    return relative.format(Math.round(seconds), "second");
  }

  function localiseTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      var style = el.dataset.style || "datetime";
      el.textContent = style === "relative" ? ago(date) : style === "date" ? dateOnly.format(date) : dateTime.format(date);
      el.title = dateTime.format(date) + " (" + Intl.DateTimeFormat().resolvedOptions().timeZone + ")";
    });
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  var palette = ["#2563eb", "#16a34a", "#dc2626", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

  // A value with its unit: "B/s" and "B" in binary multiples (1.5 MiB/s), anything else as it is (42.1%).
  function formatter(unit) {
    if (unit === "B/s" || unit === "B") {
      var prefixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
      return function (v) {
        var i = 0;
        while (Math.abs(v) >= 1024 && i < prefixes.length - 1) { v /= 1024; i++; }
        return (+v.toFixed(v >= 100 || i === 0 ? 0 : 1)) + " " + prefixes[i] + unit;
      };
    }
    return function (v) { return (+v.toFixed(2)) + unit; };
  }

  // Time ticks in the viewer's locale and zone: hours within two days, days beyond.
  var hourTick = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit"});
  var dayTick = new Intl.DateTimeFormat(undefined, {day: "numeric", month: "short"});
  function timeTicks(u, ticks) {
    var span = ticks.length > 1 ? ticks[ticks.length - 1] - ticks[0] : 0;
    var format = span > 2 * 86400 ? dayTick : hourTick;
    return ticks.map(function (t) { return format.format(new Date(t * 1000)); });
  }

  function draw(el, payload) {
    var state = el._hostatlas;
    var data = [payload.x].concat(payload.series.map(function (s) { return s.values; }));
    // Nothing to draw yet (a new server, a metric it does not send): the chart says so instead of an empty grid.
    var empty = payload.series.every(function (s) { return s.values.every(function (v) { return v == null; }); });
    el.toggleAttribute("data-empty", empty);
    var format = formatter(el.dataset.unit || "");
    if (state.plot && state.labels === payload.series.map(function (s) { return s.label; }).join("\u0000")) {
      state.plot.setData(data);
      return;
    }
    if (state.plot) state.plot.destroy();
    var grid = {stroke: cssVar("--chart-grid"), width: 1};
    var axis = {stroke: cssVar("--muted"), grid: grid, ticks: grid};
    state.labels = payload.series.map(function (s) { return s.label; }).join("\u0000");
    state.plot = new uPlot({
      width: Math.max(el.clientWidth, 200),
      height: Number(el.dataset.height || 220),
      series: [{value: function (u, v) { return v == null ? "–" : dateTime.format(new Date(v * 1000)); }}].concat(payload.series.map(function (s, i) {
        return {label: s.label, stroke: palette[i % palette.length], width: 1.5, spanGaps: false,
                value: function (u, v) { return v == null ? "–" : format(v); }};
      })),
      axes: [Object.assign({}, axis, {values: timeTicks}), Object.assign({}, axis, {size: 70, values: function (u, ticks) {
        return ticks.map(format);
      }})],
      scales: {x: {time: true}},
      cursor: {drag: {x: true, y: false}},
    }, data, el);
    el.dataset.points = String(payload.x.length);
  }

  function load(el) {
    var state = el._hostatlas;
    if (state.loading) return;
    state.loading = true;
    fetch(el.dataset.src, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (payload) {
        if (!el.isConnected) return;
        el.classList.remove("chart-failed");
        draw(el, payload);
        el.dispatchEvent(new CustomEvent("hostatlas:chart-drawn", {bubbles: true, detail: payload}));
      })
      .catch(function () { el.classList.add("chart-failed"); })
      .finally(function () { state.loading = false; });
  }

  function startChart(el) {
    if (el._hostatlas) return;
    el._hostatlas = {plot: null, timer: null, loading: false, labels: ""};
    charts.add(el);
    load(el);
    if (el.hasAttribute("data-live")) {
      el._hostatlas.timer = setInterval(function () { if (!document.hidden) load(el); }, refreshSeconds * 1000);
    }
  }

  function stopChart(el) {
    var state = el._hostatlas;
    if (!state) return;
    clearInterval(state.timer);
    if (state.plot) state.plot.destroy();
    el._hostatlas = null;
    charts.delete(el);
  }

  function init(root) {
    localiseTimes(root);
    root.querySelectorAll(".chart[data-src]").forEach(startChart);
  }

  document.addEventListener("DOMContentLoaded", function () {
    init(document);
    setInterval(function () { localiseTimes(document); }, 30000);
  });

  // htmx: new content gets the same treatment; content about to be removed lets go of its charts and timers.
  document.addEventListener("htmx:load", function (event) { init(event.target); });
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var el = event.target;
    if (el.matches && el.matches(".chart")) stopChart(el);
    if (el.querySelectorAll) el.querySelectorAll(".chart").forEach(stopChart);
  });

  // Charts redraw at the new width when the window changes size.
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (el) {
        var state = el._hostatlas;
        if (state && state.plot) state.plot.setSize({width: Math.max(el.clientWidth, 200), height: state.plot.height});
      });
    }, 150);
  });

  // A live part replaced by htmx keeps the <details data-keep-open> the reader had opened (a ping's body, a
  // delivery's attempts): their ids are noted before the swap and opened again after it.
  var keptOpen = [];
  document.addEventListener("htmx:beforeSwap", function (event) {
    keptOpen = Array.prototype.map.call(event.target.querySelectorAll("details[data-keep-open][open]"),
                                        function (el) { return el.id; });
  });
  document.addEventListener("htmx:afterSettle", function () {
    keptOpen.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.open = true;
    });
    keptOpen = [];
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.dataset.copy);
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    navigator.clipboard.writeText(text.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) event.target.form.requestSubmit();
  });

  document.addEventListener("submit", function (event) {
    var message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
