// Alert rule form: draws the backtest preview (htmx puts it in #backtest) with uPlot: the window values the
// rule would have seen, its threshold (and recovery threshold) as lines, and the periods it would have fired as
// shaded bands. The data travels in data-backtest (no inline script: the CSP forbids it).
(function () {
  "use strict";
  var palette = ["#2563eb", "#16a34a", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#d97706", "#0f766e"];

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function constant(xs, value) {
    return xs.map(function () { return value; });
  }

  function draw(el) {
    if (el._plot || typeof uPlot === "undefined") return;
    var payload = JSON.parse(el.dataset.backtest);
    var data = [payload.x].concat(payload.series.map(function (s) { return s.values; }));
    var series = [{}].concat(payload.series.map(function (s, i) {
      return {label: s.label, stroke: palette[i % palette.length], width: 1.5};
    }));
    data.push(constant(payload.x, payload.threshold));
    series.push({label: "threshold", stroke: cssVar("--bad") || "#dc2626", width: 1.5, dash: [6, 4]});
    if (payload.recovery !== null && payload.recovery !== undefined) {
      data.push(constant(payload.x, payload.recovery));
      series.push({label: "recovery", stroke: cssVar("--warn") || "#d97706", width: 1, dash: [3, 3]});
    }
    var grid = {stroke: cssVar("--chart-grid"), width: 1};
    var axis = {stroke: cssVar("--muted"), grid: grid, ticks: grid};
    var bandFill = cssVar("--bad-bg") || "rgba(220, 38, 38, .15)";
    el._plot = new uPlot({
      width: Math.max(el.clientWidth, 200),
      height: Number(el.dataset.height || 240),
      series: series,
      axes: [axis, axis],
      scales: {x: {time: true}},
      hooks: {drawClear: [function (u) {
        var ctx = u.ctx;
        ctx.save();
        ctx.fillStyle = bandFill;
        payload.bands.forEach(function (band) {
          var left = u.valToPos(band[0], "x", true);
          var right = u.valToPos(band[1], "x", true);
          ctx.fillRect(left, u.bbox.top, Math.max(right - left, 2), u.bbox.height);
        });
        ctx.restore();
      }]},
    }, data, el);
    el.dataset.points = String(payload.x.length);
    el.dataset.bands = String(payload.bands.length);
    el.dispatchEvent(new CustomEvent("hostatlas:chart-drawn", {bubbles: true, detail: payload}));
  }

  function init(root) {
    if (root.matches && root.matches(".backtest-chart")) draw(root);
    if (root.querySelectorAll) root.querySelectorAll(".backtest-chart").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.target); });
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var el = event.target;
    if (el._plot) { el._plot.destroy(); el._plot = null; }
  });
  window.addEventListener("resize", function () {
    document.querySelectorAll(".backtest-chart").forEach(function (el) {
      if (el._plot) el._plot.setSize({width: Math.max(el.clientWidth, 200), height: el._plot.height});
    });
  });
})();
