"""Business rules of webhook endpoints (never commits: the request's transaction does).

- A secret is ``whsec_`` + base64 of 32 random bytes (the Standard Webhooks format); it is
  returned on creation and rotation only. It is stored in clear because signing needs it.
- Rotation keeps the old secret signing beside the new one for ``ROTATION_OVERLAP`` (24 h).
- The api never calls a merchant's URL itself: a ping and a manual redelivery are deliveries
  due now, which the notifier sends through its SSRF guard (``GET …/deliveries`` shows the
  result a moment later).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api import ids
from pago.api.auth.principal import Principal
from pago.api.errors import InvalidRequest, ResourceMissing, StateConflict
from pago.api.webhook_endpoints import repository
from pago.api.webhook_endpoints.repository import DeliveryFilter
from pago.api.webhook_endpoints.schemas import (
    PING_EVENT_TYPE,
    CreateEndpointRequest,
    DeletedEndpoint,
    DeliveryList,
    EndpointList,
    EndpointStatus,
    ListMeta,
    UpdateEndpointRequest,
    WebhookDelivery,
    WebhookDeliveryDetail,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)
from pago.api.webhook_endpoints.settings import WebhookSettings
from pago.api.webhook_endpoints.urls import url_problem
from pago.common.enums import WebhookEventType

ROTATION_OVERLAP = timedelta(hours=24)
SECRET_BYTES = 32
DISABLED_BY_MERCHANT = "disabled through the API"
DELETED = "the endpoint was deleted"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def utc_now() -> datetime:
    return datetime.now(UTC)


def _endpoint(row: Mapping[Any, Any]) -> WebhookEndpoint:
    return WebhookEndpoint(**_endpoint_fields(row))


def _endpoint_fields(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "enabled_events": [WebhookEventType(v) for v in row["enabled_events"]],
        "description": row["description"],
        "livemode": row["mode"] == "live",
        "status": EndpointStatus.DISABLED if row["disabled_at"] else EndpointStatus.ENABLED,
        "disabled_reason": row["disabled_reason"],
        "previous_secret_expires_at": row["previous_secret_expires_at"],
        "created_at": row["created_at"],
    }


def _delivery(row: Mapping[Any, Any]) -> WebhookDelivery:
    return WebhookDelivery(**_delivery_fields(row))


def _delivery_fields(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        key: row[key]
        for key in (
            "id",
            "endpoint_id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
        )
    }


def _meta(total: int, page: int, page_size: int) -> ListMeta:
    return ListMeta(
        total=total, page=page, page_size=page_size, total_pages=math.ceil(total / page_size)
    )


class WebhookEndpointService:
    def __init__(
        self, settings: WebhookSettings, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._settings = settings
        self._clock = clock

    def _check_url(self, url: str, principal: Principal) -> None:
        problem = url_problem(
            url,
            live=principal.livemode,
            allow_loopback=self._settings.webhook_loopback_allowed,
            allowed_networks=self._settings.webhook_allowed_networks,
        )
        if problem is not None:
            raise InvalidRequest(f"Invalid url: {problem}.", param="url")

    async def _find(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str, *, lock: bool = False
    ) -> Mapping[Any, Any]:
        row = await repository.find_endpoint(
            conn, principal.merchant.id, principal.mode, endpoint_id, for_update=lock
        )
        if row is None:
            raise ResourceMissing(f"No such webhook endpoint: '{endpoint_id[:64]}'.", param="id")
        return row

    async def create(
        self, conn: AsyncConnection, principal: Principal, body: CreateEndpointRequest
    ) -> WebhookEndpointWithSecret:
        self._check_url(body.url, principal)
        merchant = principal.merchant.id
        if await repository.count_endpoints(conn, merchant, principal.mode) >= (
            limit := self._settings.webhook_max_endpoints
        ):
            raise InvalidRequest(
                f"A merchant may have at most {limit} webhook endpoints per mode.",
                code="webhook_endpoint_limit",
            )
        secret = new_secret()
        row = await repository.insert_endpoint(
            conn,
            {
                "id": ids.new_id("we"),
                "merchant_id": merchant,
                "mode": principal.mode.value,
                "url": body.url,
                "enabled_events": [event.value for event in body.enabled_events],
                "description": body.description,
                "secret": secret,
            },
        )
        return WebhookEndpointWithSecret(**_endpoint_fields(row), secret=secret)

    async def list(
        self, conn: AsyncConnection, principal: Principal, *, page: int, page_size: int
    ) -> EndpointList:
        merchant, mode = principal.merchant.id, principal.mode
        rows = await repository.list_endpoints(
            conn, merchant, mode, offset=(page - 1) * page_size, limit=page_size
        )
        total = await repository.count_endpoints(conn, merchant, mode)
        return EndpointList(data=[_endpoint(r) for r in rows], meta=_meta(total, page, page_size))

    async def get(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str
    ) -> WebhookEndpoint:
        return _endpoint(await self._find(conn, principal, endpoint_id))

    async def update(
        self,
        conn: AsyncConnection,
        principal: Principal,
        endpoint_id: str,
        body: UpdateEndpointRequest,
    ) -> WebhookEndpoint:
        current = await self._find(conn, principal, endpoint_id, lock=True)
        values: dict[str, Any] = {}
        if body.url is not None:
            self._check_url(body.url, principal)
            values["url"] = body.url
        if body.enabled_events is not None:
            values["enabled_events"] = [event.value for event in body.enabled_events]
        if "description" in body.model_fields_set:
            values["description"] = body.description
        was_disabled = current["disabled_at"] is not None
        if body.disabled is True and not was_disabled:
            values["disabled_at"] = self._clock()
            values["disabled_reason"] = DISABLED_BY_MERCHANT
            await repository.pause_deliveries(conn, endpoint_id)
        elif body.disabled is False and was_disabled:
            values["disabled_at"] = None
            values["disabled_reason"] = None
            await repository.resume_deliveries(conn, endpoint_id)
        if not values:
            return _endpoint(current)
        return _endpoint(await repository.update_endpoint(conn, endpoint_id, values))

    async def delete(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str
    ) -> DeletedEndpoint:
        await self._find(conn, principal, endpoint_id, lock=True)
        await repository.update_endpoint(conn, endpoint_id, {"deleted_at": self._clock()})
        await repository.fail_pending(conn, endpoint_id, DELETED)
        return DeletedEndpoint(id=endpoint_id)

    async def rotate_secret(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str
    ) -> WebhookEndpointWithSecret:
        await self._find(conn, principal, endpoint_id, lock=True)
        secret = new_secret()
        row = await repository.rotate_secret(conn, endpoint_id, secret, ROTATION_OVERLAP)
        return WebhookEndpointWithSecret(**_endpoint_fields(row), secret=secret)

    async def ping(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str
    ) -> WebhookDelivery:
        endpoint = await self._find(conn, principal, endpoint_id)
        self._require_enabled(endpoint)
        event_id = ids.event_id()
        payload = {
            "id": event_id,
            "event_type": PING_EVENT_TYPE,
            "created": int(self._clock().timestamp()),
            "data": {
                "object": "webhook_endpoint",
                "id": endpoint_id,
                "url": endpoint["url"],
                "livemode": principal.livemode,
            },
        }
        row = await repository.insert_delivery(
            conn,
            {
                "id": ids.new_id("wd"),
                "endpoint_id": endpoint_id,
                "event_id": event_id,
                "event_type": PING_EVENT_TYPE,
                "payload": json.dumps(payload, separators=(",", ":")).encode(),
            },
        )
        return _delivery(row)

    async def deliveries(
        self,
        conn: AsyncConnection,
        principal: Principal,
        endpoint_id: str,
        where: DeliveryFilter,
        *,
        page: int,
        page_size: int,
    ) -> DeliveryList:
        await self._find(conn, principal, endpoint_id)
        rows, total = await repository.list_deliveries(
            conn, endpoint_id, where, offset=(page - 1) * page_size, limit=page_size
        )
        return DeliveryList(data=[_delivery(r) for r in rows], meta=_meta(total, page, page_size))

    async def delivery(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str, delivery_id: str
    ) -> WebhookDeliveryDetail:
        await self._find(conn, principal, endpoint_id)
        found = await repository.find_delivery(conn, endpoint_id, delivery_id)
        if found is None:
            raise self._no_delivery(delivery_id)
        row, payload = found
        return WebhookDeliveryDetail(**_delivery_fields(row), payload=json.loads(payload))

    async def redeliver(
        self, conn: AsyncConnection, principal: Principal, endpoint_id: str, delivery_id: str
    ) -> WebhookDelivery:
        endpoint = await self._find(conn, principal, endpoint_id, lock=True)
        self._require_enabled(endpoint)
        row = await repository.redeliver(conn, endpoint_id, delivery_id)
        if row is None:
            raise self._no_delivery(delivery_id)
        return _delivery(row)

    @staticmethod
    def _require_enabled(endpoint: Mapping[Any, Any]) -> None:
        if endpoint["disabled_at"] is not None:
            raise StateConflict(
                "The webhook endpoint is disabled; enable it first "
                "(POST /v1/webhook_endpoints/{id} with disabled=false).",
                code="endpoint_disabled",
            )

    @staticmethod
    def _no_delivery(delivery_id: str) -> ResourceMissing:
        return ResourceMissing(
            f"No such webhook delivery: '{delivery_id[:64]}'.", param="delivery_id"
        )
