// The page at /docs: Swagger UI over this server's own OpenAPI document. A file, not an inline
// script, so that the page's Content-Security-Policy allows no inline script at all.
"use strict";

if (typeof window.SwaggerUIBundle === "function") {
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#api",
    validatorUrl: null, // Swagger UI would otherwise send the document to validator.swagger.io
    deepLinking: false,
  });
} else {
  // swagger-ui-bundle.js was not fetched (make web, forwardpass web-runtime): say how to get it
  document.getElementById("missing").hidden = false;
}
