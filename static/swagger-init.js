// Starts the vendored Swagger UI on /docs (a file, not an inline script: the CSP allows only these).
// "Try it out" requests run with the browser's session; writes carry the session's CSRF token.
(function () {
  "use strict";
  function start() {
    const root = document.getElementById("swagger-ui");
    if (!root || typeof SwaggerUIBundle === "undefined") return;
    const csrf = root.dataset.csrfToken;
    window.ui = SwaggerUIBundle({
      url: root.dataset.openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      presets: [SwaggerUIBundle.presets.apis],
      requestInterceptor: function (request) {
        if (csrf && request.method && request.method.toUpperCase() !== "GET") request.headers["X-CSRF-Token"] = csrf;
        return request;
      },
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
