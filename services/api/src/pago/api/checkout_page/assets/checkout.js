// The hosted checkout page, kept live from its SSE stream (no framework, no build step).
// The server renders the same texts first; this file only replaces them as the state moves.
"use strict";

(function () {
  const root = document.getElementById("checkout");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const FINAL = new Set(["paid", "expired", "blocked"]);
  const REDIRECT_DELAY_MS = 2500;
  let expiresAt = new Date(root.dataset.expiresAt);
  let redirecting = false;

  function texts(s) {
    const t = s.currency;
    switch (s.phase) {
      case "waiting":
        return ["Waiting for payment", `Send exactly ${s.amount_due} ${t}.`];
      case "detected":
        return ["Payment detected", `Waiting for confirmations (0 of ${s.required_confirmations}).`];
      case "confirming":
        return ["Confirming payment", `${s.confirmations} of ${s.required_confirmations} confirmations.`];
      case "underpaid":
        return [
          "Partial payment received",
          `Received ${s.amount_received} of ${s.amount} ${t}. Send the remaining ${s.amount_due} ${t}.`,
        ];
      case "paid":
        return ["Payment received", "Thank you!"];
      case "expired":
        return ["This checkout has expired", "No further payment is expected."];
      case "blocked":
        return ["Payment not accepted", `Please contact ${s.merchant_name} about this payment.`];
      default:
        return ["", ""];
    }
  }

  function link(id, href, text) {
    const a = document.createElement("a");
    a.id = id;
    a.href = href;
    a.textContent = text;
    return a;
  }

  function render(s) {
    root.dataset.phase = s.phase;
    const [headline, detail] = texts(s);
    $("headline").textContent = headline;
    $("detail").textContent = detail;
    const paid = s.phase === "paid";
    $("amount-due").textContent = paid ? s.amount_received : s.amount_due;
    $("amount").setAttribute("aria-label", paid ? "Amount paid" : "Amount to pay");
    const qr = $("qr");
    if (qr.dataset.qrPayload !== s.payment_uri) {
      qr.dataset.qrPayload = s.payment_uri;
      qr.src = `/checkout/${encodeURIComponent(s.id)}/qr.svg?due=${encodeURIComponent(s.amount_due)}`;
    }
    expiresAt = new Date(s.expires_at);
    const links = $("links");
    if (s.phase === "paid" && s.success_url && !redirecting) {
      redirecting = true;
      links.replaceChildren(link("continue", s.success_url, `Continue to ${s.merchant_name}`));
      $("detail").textContent = "Thank you! Taking you back to the shop…";
      setTimeout(() => window.location.assign(s.success_url), REDIRECT_DELAY_MS);
    } else if (s.phase === "expired" && s.cancel_url) {
      links.replaceChildren(link("cancel", s.cancel_url, `Return to ${s.merchant_name}`));
    }
  }

  function tick() {
    const left = Math.max(0, Math.floor((expiresAt - Date.now()) / 1000));
    const h = Math.floor(left / 3600);
    const m = Math.floor((left % 3600) / 60);
    const sec = String(left % 60).padStart(2, "0");
    $("countdown").textContent = h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  }
  tick();
  setInterval(tick, 1000);

  $("copy").addEventListener("click", async () => {
    const input = $("address");
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (_) {
      input.select(); // no clipboard permission: leave it selected for the user to copy
    }
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy"; }, 2000);
  });

  // A logo that fails to load goes away (it may have failed before this script ran).
  const logo = $("logo");
  if (logo) {
    if (logo.complete && logo.naturalWidth === 0) logo.remove();
    else logo.addEventListener("error", () => logo.remove());
  }

  if (!FINAL.has(root.dataset.phase) && "EventSource" in window) {
    const events = new EventSource(root.dataset.eventsUrl);
    events.addEventListener("state", (message) => {
      const state = JSON.parse(message.data);
      render(state);
      if (FINAL.has(state.phase)) events.close();
    });
  }
})();
