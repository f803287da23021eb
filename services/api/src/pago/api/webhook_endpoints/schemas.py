"""Request and response bodies of the webhook endpoints API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pago.api.validation import HttpUrl, SafeStr
from pago.common.enums import DeliveryStatus, WebhookEventType

DEFAULT_EVENTS: tuple[WebhookEventType, ...] = (
    WebhookEventType.SESSION_COMPLETED,
    WebhookEventType.SESSION_EXPIRED,
    WebhookEventType.SESSION_BLOCKED,
    WebhookEventType.SESSION_RESOLVED,
    WebhookEventType.CARD_SESSION_COMPLETED,
    WebhookEventType.CARD_SESSION_FAILED,
    WebhookEventType.CARD_SESSION_EXPIRED,
)
"""What an endpoint receives when it does not list events; ``session.underpaid``,
``session.payment_detected``, ``session.payment_reverted``, ``card_session.created`` and
``card_session.cancelled`` are opt-in."""

PING_EVENT_TYPE = "webhook.ping"


def _unique(events: list[WebhookEventType]) -> list[WebhookEventType]:
    return list(dict.fromkeys(events))


EnabledEvents = Annotated[
    list[WebhookEventType],
    Field(
        min_length=1,
        max_length=len(WebhookEventType),
        description="The events to send. `session.underpaid`, `session.payment_detected`, "
        "`session.payment_reverted`, `card_session.created` and `card_session.cancelled` are "
        "sent only to endpoints that list them.",
    ),
    AfterValidator(_unique),
]
Description = Annotated[SafeStr, Field(max_length=255, description="Your own label.")]


class CreateEndpointRequest(BaseModel):
    """``POST /v1/webhook_endpoints``."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://shop.example/webhooks/pago",
                    "enabled_events": ["session.completed"],
                }
            ]
        },
    )

    url: HttpUrl = Field(
        description="Where webhooks are POSTed: https in live mode; never a private, loopback "
        "or link-local address (checked again at every delivery, after resolving the name)."
    )
    enabled_events: EnabledEvents = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    description: Description | None = None


class UpdateEndpointRequest(BaseModel):
    """``POST /v1/webhook_endpoints/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="ignore")

    url: HttpUrl | None = None
    enabled_events: EnabledEvents | None = None
    description: Description | None = None
    disabled: bool | None = Field(
        default=None,
        description="`true` pauses deliveries; `false` re-enables an endpoint (also one the "
        "notifier disabled because it answered 410) and resumes its pending deliveries.",
    )


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class WebhookEndpoint(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str = Field(examples=["we_3f9a1c2b7d4e5f60718293a4"])
    url: str
    enabled_events: list[WebhookEventType]
    description: str | None
    livemode: bool
    status: EndpointStatus
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, webhooks are signed with the previous "
        "secret too (after `rotate_secret`)."
    )
    created_at: datetime


class WebhookEndpointWithSecret(WebhookEndpoint):
    """The endpoint with its signing secret: returned only on creation and rotation."""

    secret: str = Field(
        description="`whsec_…`: store it now, it is not shown again. Verify `X-Signature` "
        "with the whole string as the HMAC key, or `webhook-signature` with a Standard "
        "Webhooks library.",
    )


class DeletedEndpoint(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    deleted: Literal[True] = True


class ListMeta(BaseModel):
    total: int
    page: int
    page_size: int
    total_pages: int


class EndpointList(BaseModel):
    """Newest first."""

    data: list[WebhookEndpoint]
    meta: ListMeta


class WebhookDelivery(BaseModel):
    """One event sent (or being sent) to one endpoint, with its latest attempt."""

    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str = Field(examples=["wd_3f9a1c2b7d4e5f60718293a4"])
    endpoint_id: str
    event_id: str = Field(description="The webhook's `id` (also its `webhook-id` header).")
    event_type: str = Field(examples=["session.completed", PING_EVENT_TYPE])
    status: DeliveryStatus = Field(
        description="`pending` (scheduled, or paused while the endpoint is disabled), "
        "`succeeded` (a 2xx answer) or `failed` (retries exhausted, or the endpoint answered "
        "410)."
    )
    attempts: int = Field(description="Attempts so far; a manual redelivery starts from 0.")
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryDetail(WebhookDelivery):
    payload: dict[str, Any] = Field(description="The body exactly as signed and sent.")


class DeliveryList(BaseModel):
    """Newest first."""

    data: list[WebhookDelivery]
    meta: ListMeta
