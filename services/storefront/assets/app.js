// Mercato storefront: the pages work without this script. It only keeps a second click
// from sending a form twice (the server makes a repeated checkout or payment harmless
// anyway, with the form's Idempotency-Key).
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.sent === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
  for (const button of form.querySelectorAll("button[type=submit]")) {
    button.disabled = true;
  }
});
// A page restored from the back/forward cache gets its buttons back.
window.addEventListener("pageshow", () => {
  for (const form of document.querySelectorAll("form[data-sent='1']")) {
    delete form.dataset.sent;
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.disabled = false;
    }
  }
});
