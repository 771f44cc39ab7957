// The comparison page's charts: loss curves overlaid (the job page's loss chart, static/charts.js),
// and the evaluation scores as bars.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    const node = document.getElementById("compare-data");
    if (!node || typeof Chart === "undefined" || !window.TailorCharts) return;
    const data = JSON.parse(node.textContent);
    const COLOURS = TailorCharts.COLOURS;

    const loss = document.getElementById("compare-loss");
    if (loss) {
      TailorCharts.lossChart(loss, data.curves.map(function (curve, i) {
        return TailorCharts.series(curve.name, TailorCharts.points(curve.points, "loss"), COLOURS[i % COLOURS.length], false);
      }));
    }

    const bars = document.getElementById("compare-metrics");
    if (bars) {
      // Scores share one 0-1 axis; losses and perplexity (lower is better, other scales) stay in the table.
      const LOSSES = ["validation_loss", "perplexity"];
      const metrics = Array.from(new Set(data.rows.flatMap(function (r) { return Object.keys(r.metrics); })))
        .filter(function (m) { return LOSSES.indexOf(m) < 0; });
      const series = [{ name: data.base_name || "the base model", metrics: data.base }].concat(data.rows.map(function (r) { return { name: r.name, metrics: r.metrics }; }));
      new Chart(bars, {
        type: "bar",
        data: {
          labels: metrics.map(function (m) { return data.names[m] || m; }),
          datasets: series.map(function (s, i) {
            return { label: s.name, backgroundColor: i === 0 ? TailorCharts.BASE_COLOUR : COLOURS[(i - 1) % COLOURS.length],
                     data: metrics.map(function (m) { return s.metrics[m] ? s.metrics[m].value : null; }) };
          }),
        },
        options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
      });
    }
  });
})();
