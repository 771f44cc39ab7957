// The comparison page's charts: loss curves overlaid, and the evaluation scores as bars.
(function () {
  "use strict";
  const COLOURS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c"];

  document.addEventListener("DOMContentLoaded", function () {
    const node = document.getElementById("compare-data");
    if (!node || typeof Chart === "undefined") return;
    const data = JSON.parse(node.textContent);

    const loss = document.getElementById("compare-loss");
    if (loss) {
      new Chart(loss, {
        type: "line",
        data: { datasets: data.curves.map(function (curve, i) {
          return { label: curve.name, data: curve.points.map(function (p) { return { x: p.step, y: p.loss }; }),
                   borderColor: COLOURS[i % COLOURS.length], pointRadius: 0, borderWidth: 2, tension: 0.2 };
        }) },
        options: { animation: false, parsing: false, maintainAspectRatio: false,
                   scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: "loss" } } } },
      });
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
            return { label: s.name, backgroundColor: i === 0 ? "#adb5bd" : COLOURS[(i - 1) % COLOURS.length],
                     data: metrics.map(function (m) { return s.metrics[m] ? s.metrics[m].value : null; }) };
          }),
        },
        options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
      });
    }
  });
})();
