// The one chart configuration of Tailor's pages: colours and the loss-by-step line chart, used by
// the live job page (app.js) and the comparison page (compare.js).
(function () {
  "use strict";
  const COLOURS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c"];
  const HELD_OUT_COLOUR = "#d9822b";
  const BASE_COLOUR = "#adb5bd";

  // {step, value} rows -> chart points, skipping steps without a value.
  function points(rows, field) {
    return rows.filter(function (p) { return p[field] !== null && p[field] !== undefined; })
      .map(function (p) { return { x: p.step, y: p[field] }; });
  }

  // A series drawn as a smooth curve (per-step training loss) or as dots joined by lines (held-out loss).
  function series(label, data, colour, dotted) {
    return { label: label, data: data, borderColor: colour, pointRadius: dotted ? 3 : 0, borderWidth: 2, tension: dotted ? 0 : 0.2 };
  }

  // Loss (y) by training step (x), one line per series.
  function lossChart(canvas, datasets, yTitle) {
    return new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false, parsing: false, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: yTitle || "loss" } } },
        plugins: { legend: { display: true } },
      },
    });
  }

  window.TailorCharts = { COLOURS: COLOURS, HELD_OUT_COLOUR: HELD_OUT_COLOUR, BASE_COLOUR: BASE_COLOUR,
                          points: points, series: series, lossChart: lossChart };
})();
