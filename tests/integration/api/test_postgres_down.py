"""Postgres unreachable: every route that needs it answers 503 ``service_unavailable`` with
``Retry-After`` (documented on every authenticated operation), never a 500."""

from __future__ import annotations

from pago.api.auth.keys import generate_key
from pago.api.settings import ApiSettings
from pago.common.enums import Mode
from pago.devstack._support import free_tcp_port
from tests.support.api import assert_error, crypto_body, running_app


async def test_requests_get_503_while_postgres_is_unreachable(settings: ApiSettings) -> None:
    nowhere = f"postgresql://pago:pago@127.0.0.1:{free_tcp_port()}/pago"
    async with running_app(settings.model_copy(update={"database_url": nowhere})) as (_, client):
        key = {"Authorization": f"Bearer {generate_key(Mode.TEST)}"}
        for response in (
            await client.get("/v1/checkout/sessions", headers=key),
            await client.post("/v1/checkout/sessions", json=crypto_body(), headers=key),
            await client.get("/v1/checkout/sessions/cs_0123456789abcdef01234567/events"),
        ):
            assert_error(response, 503, "service_unavailable", error_type="api_error")
            assert int(response.headers["retry-after"]) >= 1
        page = await client.get("/checkout/cs_0123456789abcdef01234567")
        assert page.status_code == 503
        assert (await client.get("/readyz")).status_code == 503
