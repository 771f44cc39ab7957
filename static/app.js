// Tailor's small client script: technique switching, upload progress and the live loss chart.
(function () {
  "use strict";

  const charts = {};

  function drawLossCharts(root) {
    root.querySelectorAll("script.loss-data").forEach(function (node) {
      const canvas = document.getElementById(node.dataset.chart);
      if (!canvas || typeof Chart === "undefined") return;
      const points = JSON.parse(node.textContent || "[]");
      const empty = document.getElementById("loss-empty");
      if (empty) empty.hidden = points.length > 0;
      const data = points.map(function (p) { return { x: p.step, y: p.loss }; });
      let chart = charts[canvas.id];
      if (chart && chart.canvas === canvas) {
        chart.data.datasets[0].data = data;
        chart.update("none");
        return;
      }
      charts[canvas.id] = new Chart(canvas, {
        type: "line",
        data: { datasets: [{ label: "training loss", data: data, borderColor: "#2f6fde", pointRadius: 0, borderWidth: 2, tension: 0.2 }] },
        options: {
          animation: false, parsing: false, maintainAspectRatio: false,
          scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: "loss" } } },
          plugins: { legend: { display: false } },
        },
      });
    });
  }

  function showTechnique(form) {
    const select = form.querySelector("#technique");
    if (!select) return;
    const chosen = select.value;
    form.querySelectorAll("fieldset.params").forEach(function (fs) {
      const on = fs.dataset.technique === chosen;
      fs.hidden = !on;
      fs.disabled = !on;
    });
    form.querySelectorAll(".technique-help").forEach(function (el) { el.hidden = el.dataset.technique !== chosen; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawLossCharts(document);
    const form = document.getElementById("train-form");
    if (form) {
      showTechnique(form);
      form.addEventListener("change", function (e) { if (e.target.id === "technique") showTechnique(form); });
    }
  });

  document.addEventListener("htmx:afterSwap", function (e) { drawLossCharts(e.detail.target.parentNode || document); });

  // Upload progress for the htmx-powered upload form.
  document.addEventListener("htmx:xhr:progress", function (e) {
    const bar = document.getElementById("upload-progress");
    if (!bar || !e.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = (100 * e.detail.loaded) / e.detail.total;
  });
})();
