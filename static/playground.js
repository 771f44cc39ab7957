// Streams the playground's answers (server-sent events) into their panels as they are generated.
(function () {
  "use strict";
  function follow(root) {
    const box = root.querySelector ? root.querySelector(".answers[data-events]") : null;
    if (!box || box.dataset.following) return;
    box.dataset.following = "1";
    const source = new EventSource(box.dataset.events);
    source.onmessage = function (message) {
      const event = JSON.parse(message.data);
      if (event.error) {
        box.insertAdjacentHTML("afterbegin", '<p class="error" role="alert"></p>');
        box.querySelector(".error").textContent = event.error;
        source.close();
        return;
      }
      if (event.finished) { source.close(); return; }
      const panel = box.querySelector('[data-target="' + event.target + '"]');
      if (!panel) return;
      if (event.text) {
        panel.querySelector(".answer-text").textContent += event.text;
        panel.querySelector(".answer-state").textContent = "writing…";
      }
      if (event.done) panel.querySelector(".answer-state").textContent = "done";
      // "Write a better answer" saves the model's answer as the rejected one: keep it in the form.
      const answer = panel.querySelector('.correction input[name="answer"]');
      if (answer) answer.value = panel.querySelector(".answer-text").textContent;
    };
  }
  document.addEventListener("htmx:afterSwap", function (e) { follow(e.detail.target); });
})();
