// Tailor's small client script: technique switching, upload progress and the live loss chart.
(function () {
  "use strict";

  const charts = {};

  // The live loss chart of a job page (its configuration is TailorCharts', shared with the comparison page).
  function drawLossCharts(root) {
    root.querySelectorAll("script.loss-data").forEach(function (node) {
      const canvas = document.getElementById(node.dataset.chart);
      if (!canvas || typeof Chart === "undefined" || !window.TailorCharts) return;
      const points = JSON.parse(node.textContent || "[]");
      const empty = document.getElementById("loss-empty");
      if (empty) empty.hidden = points.length > 0;
      const data = TailorCharts.points(points, "loss");
      const validation = TailorCharts.points(points, "validation_loss");
      let chart = charts[canvas.id];
      if (chart && chart.canvas === canvas) {
        chart.data.datasets[0].data = data;
        chart.data.datasets[1].data = validation;
        chart.update("none");
        return;
      }
      charts[canvas.id] = TailorCharts.lossChart(canvas, [
        TailorCharts.series("training loss", data, TailorCharts.COLOURS[0], false),
        TailorCharts.series("held-out loss", validation, TailorCharts.HELD_OUT_COLOUR, true),
      ]);
    });
  }

  // Preference tuning: the chosen and rejected answers' log-probabilities by step.
  function drawLogpsCharts(root) {
    root.querySelectorAll("script.logps-data").forEach(function (node) {
      const canvas = document.getElementById(node.dataset.chart);
      if (!canvas || typeof Chart === "undefined" || !window.TailorCharts) return;
      const points = JSON.parse(node.textContent || "[]");
      const chosen = TailorCharts.points(points, "chosen_logps");
      const rejected = TailorCharts.points(points, "rejected_logps");
      const chart = charts[canvas.id];
      if (chart && chart.canvas === canvas) {
        chart.data.datasets[0].data = chosen;
        chart.data.datasets[1].data = rejected;
        chart.update("none");
        return;
      }
      charts[canvas.id] = TailorCharts.lossChart(canvas, [
        TailorCharts.series("chosen (good)", chosen, TailorCharts.COLOURS[2], false),
        TailorCharts.series("rejected (bad)", rejected, TailorCharts.COLOURS[1], false),
      ], "log-probability");
    });
  }

  function readJson(id) {
    const node = document.getElementById(id);
    try { return node ? JSON.parse(node.textContent || "{}") : {}; } catch (e) { return {}; }
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

  // Tasks and techniques the chosen base model cannot do are disabled, with the reason shown.
  function applyAvailability(form) {
    const availability = readJson("train-availability");
    const model = (form.querySelector("#base_model") || {}).value;
    const info = availability[model];
    const taskSelect = form.querySelector("#task");
    if (!info || !taskSelect) return;
    Array.prototype.forEach.call(taskSelect.options, function (o) { o.disabled = info.tasks.indexOf(o.value) < 0; });
    if (taskSelect.selectedOptions[0] && taskSelect.selectedOptions[0].disabled) taskSelect.value = info.tasks[0];
    const task = taskSelect.value;
    form.querySelectorAll("fieldset.task-mapping").forEach(function (fs) {
      const on = fs.dataset.task === task;
      fs.hidden = !on;
      fs.disabled = !on;
    });
    const reasons = (info.reasons || {})[task] || {};
    const techniqueSelect = form.querySelector("#technique");
    const list = form.querySelector("#technique-unavailable");
    if (list) list.innerHTML = "";
    Array.prototype.forEach.call(techniqueSelect.options, function (o) {
      const reason = reasons[o.value];
      o.disabled = !!reason;
      o.title = reason || "";
      o.textContent = o.textContent.replace(/ — not available$/, "") + (reason ? " — not available" : "");
      if (reason && list) {
        const li = document.createElement("li");
        li.textContent = o.textContent.replace(/ — not available$/, "") + ": " + reason;
        list.appendChild(li);
      }
    });
    if (techniqueSelect.selectedOptions[0] && techniqueSelect.selectedOptions[0].disabled) {
      const first = Array.prototype.find.call(techniqueSelect.options, function (o) { return !o.disabled; });
      if (first) techniqueSelect.value = first.value;
    }
    showTechnique(form);
  }

  // A preset fills the chosen technique's settings for the chosen task.
  function applyPreset(form) {
    const preset = (form.querySelector("#preset") || {}).value;
    if (!preset) return;
    const presets = readJson("train-presets");
    const technique = form.querySelector("#technique").value;
    const task = form.querySelector("#task").value;
    const values = ((presets[technique] || {})[task] || {})[preset] || {};
    const fs = form.querySelector('fieldset.params[data-technique="' + technique + '"]');
    if (!fs) return;
    Object.keys(values).forEach(function (name) {
      const input = fs.querySelector('[name="param_' + name + '"]');
      if (input) input.value = values[name];
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawLossCharts(document);
    sizeBars(document);
    drawLogpsCharts(document);
    const form = document.getElementById("train-form");
    if (form) {
      applyAvailability(form);
      if (!form.querySelector(".field-error")) applyPreset(form);
      form.addEventListener("change", function (e) {
        const id = e.target.id;
        if (id === "base_model" || id === "task") { applyAvailability(form); applyPreset(form); }
        if (id === "technique") { showTechnique(form); applyPreset(form); }
        if (id === "preset") applyPreset(form);
        if (e.target.name && e.target.name.indexOf("param_") === 0) {
          const preset = form.querySelector("#preset");
          if (preset) preset.value = "";  // the user's own value wins over a preset
        }
      });
    }
  });

  document.addEventListener("htmx:afterSwap", function (e) {
    drawLossCharts(e.detail.target.parentNode || document);
    sizeBars(e.detail.target.parentNode || document);
    drawLogpsCharts(e.detail.target.parentNode || document);
  });

  // Bar sizes come as data-width / data-height (percent): inline style attributes are refused by the
  // Content-Security-Policy, while setting element.style from a script file is allowed.
  function sizeBars(root) {
    root.querySelectorAll("[data-width]").forEach(function (el) { el.style.width = el.dataset.width + "%"; });
    root.querySelectorAll("[data-height]").forEach(function (el) { el.style.height = el.dataset.height + "%"; });
  }

  // Behaviour that used to sit in on*= attributes (refused by the CSP): a select that submits its
  // form when changed, and a form that asks before it is sent.
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("select[data-submit-on-change]") && e.target.form) e.target.form.submit();
  });
  document.addEventListener("submit", function (e) {
    const message = e.target.dataset ? e.target.dataset.confirm : null;
    if (message && !window.confirm(message)) e.preventDefault();
  });

  // Upload progress for the htmx-powered upload form.
  document.addEventListener("htmx:xhr:progress", function (e) {
    const bar = document.getElementById("upload-progress");
    if (!bar || !e.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = (100 * e.detail.loaded) / e.detail.total;
  });
})();
