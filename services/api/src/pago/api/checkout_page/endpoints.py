"""Routes of the hosted checkout page (public: the session id in the URL is the capability).

``GET /checkout/{id}`` the page; ``GET /checkout/{id}/qr.svg`` its QR code;
``GET /checkout/assets/…`` its script and styles; ``GET /v1/checkout/sessions/{id}/events`` the
live status stream (SSE) the page listens to.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from starlette.responses import Response, StreamingResponse

from pago.api.checkout_page import page, qr
from pago.api.checkout_page.live import LiveStream
from pago.api.checkout_page.service import SessionNotFound
from pago.api.dependencies import State
from pago.api.errors import ResourceMissing, error_responses

router = APIRouter(tags=["Hosted checkout"])

SessionId = Annotated[
    str,
    Path(
        max_length=64,
        description="The session id (`cs_…`).",
        examples=["cs_3f9a1c2b7d4e5f60718293a4"],
    ),
]
_PAGE_HEADERS = {
    "Content-Security-Policy": page.CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def events_url(session_id: str) -> str:
    return f"/v1/checkout/sessions/{session_id}/events"


@router.get("/checkout/assets/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    found = page.ASSETS.get(name)
    if found is None:
        raise ResourceMissing(f"No such asset: '{name[:64]}'.")
    body, media_type = found
    return Response(
        body,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/checkout/{id}", include_in_schema=False)
async def checkout_page(id: SessionId, state: State) -> Response:
    try:
        session = await state.checkout_page.snapshot(state.engine, id)
    except SessionNotFound:
        return Response(page.not_found(), 404, _PAGE_HEADERS, media_type="text/html")
    body = page.render(state.checkout_page.state(session), events_url=events_url(id))
    return Response(body, headers=_PAGE_HEADERS, media_type="text/html")


@router.get("/checkout/{id}/qr.svg", include_in_schema=False)
async def checkout_qr(id: SessionId, state: State) -> Response:
    try:
        session = await state.checkout_page.snapshot(state.engine, id)
    except SessionNotFound:
        raise ResourceMissing(f"No such checkout session: '{id}'.", param="id") from None
    current = state.checkout_page.state(session)
    return Response(
        qr.svg(current.payment_uri, title=f"Pay {current.amount_due} {current.currency}"),
        media_type="image/svg+xml",
        headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/v1/checkout/sessions/{id}/events",
    summary="Stream a checkout session's status (SSE, public)",
    operation_id="streamCheckoutSessionEvents",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream` of `state` events: the page's view of the "
            "session (status, phase, amounts, confirmations), each with an `id` to resume "
            "from with `Last-Event-ID`. Ends after `paid`, `expired` or `blocked`.",
            "content": {"text/event-stream": {}},
        },
        **error_responses(404),
    },
)
async def session_events(
    id: SessionId,
    state: State,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=64, description="Resume after this event."),
    ] = None,
) -> StreamingResponse:
    """Public, like the page: the session id is the capability. Works on any api replica (the
    stream comes from the Redis live feed the notifier writes)."""
    try:
        await state.checkout_page.snapshot(state.engine, id)  # 404 now, not as a broken stream
    except SessionNotFound:
        raise ResourceMissing(f"No such checkout session: '{id}'.", param="id") from None
    stream = LiveStream(
        state.redis,
        id,
        load=lambda: state.checkout_page.snapshot(state.engine, id),
        to_state=state.checkout_page.state,
    )
    return StreamingResponse(
        stream.events(last_event_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
