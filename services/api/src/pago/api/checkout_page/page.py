"""The page's HTML: rendered complete on the server (it reads right without JavaScript), then
kept live by ``assets/checkout.js`` from the SSE stream. No template engine, no build step:
every value goes through ``html.escape``.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from urllib.parse import quote

from pago.api.checkout_page.service import PageState, Phase

ASSETS: dict[str, tuple[bytes, str]] = {
    name: ((resources.files("pago.api.checkout_page") / "assets" / name).read_bytes(), kind)
    for name, kind in (
        ("checkout.css", "text/css; charset=utf-8"),
        ("checkout.js", "text/javascript; charset=utf-8"),
    )
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only our own script and styles run; the merchant's logo may come from any https origin."""


def status_text(state: PageState) -> tuple[str, str]:
    """The headline and the detail line for ``state`` (the script has the same table)."""
    token = state.currency.value
    match state.phase:
        case Phase.WAITING:
            return "Waiting for payment", f"Send exactly {state.amount_due} {token}."
        case Phase.DETECTED:
            return (
                "Payment detected",
                f"Waiting for confirmations (0 of {state.required_confirmations}).",
            )
        case Phase.CONFIRMING:
            return (
                "Confirming payment",
                f"{state.confirmations} of {state.required_confirmations} confirmations.",
            )
        case Phase.UNDERPAID:
            return (
                "Partial payment received",
                f"Received {state.amount_received} of {state.amount} {token}. "
                f"Send the remaining {state.amount_due} {token}.",
            )
        case Phase.PAID:
            return "Payment received", "Thank you!"
        case Phase.EXPIRED:
            return "This checkout has expired", "No further payment is expected."
        case Phase.BLOCKED:
            return (
                "Payment not accepted",
                f"Please contact {state.merchant_name} about this payment.",
            )


def qr_url(state: PageState) -> str:
    # The due amount in the URL makes a new QR code a new resource (no stale cached image).
    return f"/checkout/{quote(state.id)}/qr.svg?due={quote(state.amount_due)}"


def render(state: PageState, *, events_url: str) -> str:
    e = escape
    token = state.currency.value
    headline, detail = status_text(state)
    logo = (
        f'<img class="logo" id="logo" src="{e(state.merchant_logo_url)}" alt="" '
        f'width="48" height="48">'
        if state.merchant_logo_url
        else ""
    )
    badge = "" if state.livemode else '<span class="badge">Test mode</span>'
    merchant = e(state.merchant_name)
    paid = state.phase is Phase.PAID
    figure = state.amount_received if paid else state.amount_due
    if state.phase is Phase.PAID and state.success_url:
        links = f'<a id="continue" href="{e(state.success_url)}">Continue to {merchant}</a>'
    elif state.phase is not Phase.PAID and state.cancel_url:
        links = f'<a id="cancel" href="{e(state.cancel_url)}">Return to {merchant}</a>'
    else:
        links = ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Pay {e(state.merchant_name)}</title>
<link rel="stylesheet" href="/checkout/assets/checkout.css">
<script src="/checkout/assets/checkout.js" defer></script>
</head>
<body>
<main id="checkout" class="card" data-phase="{e(state.phase.value)}"
  data-events-url="{e(events_url)}" data-expires-at="{e(state.expires_at.isoformat())}"
  data-success-url="{e(state.success_url or "")}" data-cancel-url="{e(state.cancel_url or "")}"
  data-currency="{e(token)}">
<header class="merchant">{logo}<h1 id="merchant">{e(state.merchant_name)}</h1>{badge}</header>

<section class="amount" id="amount" aria-label="{"Amount paid" if paid else "Amount to pay"}">
<p><span class="figure" id="amount-due">{e(figure)}</span>
<span class="token">{e(token)}</span></p>
<p class="network">on <strong id="network">{e(state.network_name)}</strong></p>
</section>

<section class="pay" id="pay" aria-label="How to pay">
<figure class="qr">
<img id="qr" src="{e(qr_url(state))}" width="220" height="220"
  alt="QR code of the payment request" data-qr-payload="{e(state.payment_uri)}">
<figcaption>Scan with your wallet</figcaption>
</figure>
<label for="address">Deposit address</label>
<div class="address">
<input id="address" type="text" readonly value="{e(state.pay_address)}" spellcheck="false">
<button id="copy" type="button">Copy</button>
</div>
<p class="warning">Send only {e(token)} on {e(state.network.value)} to this address.</p>
</section>

<section class="status" aria-label="Payment status">
<p id="status" role="status" aria-live="polite"><strong id="headline">{e(headline)}</strong>
<span id="detail">{e(detail)}</span></p>
<p id="expiry">Expires in
<time id="countdown" datetime="{e(state.expires_at.isoformat())}">…</time></p>
<p id="links">{links}</p>
</section>
<noscript><p>This page updates itself with JavaScript.
Reload it to see the latest status.</p></noscript>
</main>
</body>
</html>
"""


def not_found() -> str:
    return """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Checkout not found</title><link rel="stylesheet" href="/checkout/assets/checkout.css">
</head><body><main class="card"><h1>Checkout not found</h1>
<p>This payment link is not valid. Please return to the shop and start again.</p></main>
</body></html>
"""


def too_many_requests(retry_after: int) -> str:
    """The plain page a payer's browser gets over the per-IP limit (no script, no styles: the
    assets are limited too)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Too many requests</title></head>
<body><main><h1>Too many requests</h1>
<p>Please wait {retry_after} seconds and reload this page. Your payment is not affected.</p>
</main></body></html>
"""
