"""The SSRF guard: which addresses are refused, and that the checked address is the one used."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from pago.common.enums import Mode
from pago.notifier.app import build_http_client
from pago.notifier.clients import SingleClient
from pago.notifier.guard import (
    EgressPolicy,
    GuardedBackend,
    GuardedTransport,
    Resolver,
    refused,
    system_resolver,
    url_refusal,
)
from pago.notifier.repository import Claimed, Verdict
from pago.notifier.schedule import RetryPolicy
from pago.notifier.sender import Sender
from pago.notifier.settings import NotifierSettings
from tests.support.receiver import Receiver, Reply

STRICT = EgressPolicy()
DEV = EgressPolicy(allow_loopback=True)
SELF_HOSTED = EgressPolicy(allowed_networks=[ipaddress.ip_network("10.20.0.0/16")])


class TestAddresses:
    @pytest.mark.parametrize(
        ("address", "reason"),
        [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.0.1", "private"),
            ("fd12:3456::1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.170.2", "metadata"),
            ("168.63.129.16", "metadata"),
            ("100.100.100.200", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
            ("::", "unspecified"),
            ("100.64.0.1", "not a public"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "private"),
            ("::ffff:127.0.0.1", "embeds 127.0.0.1"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a00:1", "embeds 10.0.0.1"),
            ("2002:c0a8:101::1", "embeds 192.168.1.1"),
        ],
    )
    def test_refused(self, address: str, reason: str) -> None:
        refusal = STRICT.refusal(ipaddress.ip_address(address))
        assert refusal is not None
        assert reason in refusal

    @pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
    def test_public_addresses_are_allowed(self, address: str) -> None:
        assert STRICT.refusal(ipaddress.ip_address(address)) is None

    def test_loopback_only_when_allowed(self) -> None:
        assert DEV.refusal(ipaddress.ip_address("127.0.0.1")) is None
        assert DEV.refusal(ipaddress.ip_address("::1")) is None
        assert DEV.refusal(ipaddress.ip_address("10.0.0.1")) is not None

    def test_allowed_networks_open_a_private_range_but_never_metadata(self) -> None:
        assert SELF_HOSTED.refusal(ipaddress.ip_address("10.20.3.4")) is None
        assert SELF_HOSTED.refusal(ipaddress.ip_address("10.21.3.4")) is not None
        cloud = EgressPolicy(allowed_networks=[ipaddress.ip_network("169.254.0.0/16")])
        assert cloud.refusal(ipaddress.ip_address("169.254.169.254")) is not None


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "live", "reason"),
        [
            ("ftp://shop.example/hook", False, "only http and https"),
            ("file:///etc/passwd", False, "only http and https"),
            ("http://shop.example/hook", True, "must use https"),
            ("https://user:pw@shop.example/hook", True, "credentials"),
            ("https://shop.example/hook", True, None),
            ("http://shop.example:8080/hook?x=1", False, None),
        ],
    )
    def test_scheme_and_shape(self, url: str, live: bool, reason: str | None) -> None:
        refusal = url_refusal(url, live=live)
        if reason is None:
            assert refusal is None
        else:
            assert refusal is not None
            assert reason in refusal


def client(policy: EgressPolicy, resolver: Resolver = system_resolver) -> httpx.AsyncClient:
    backend = GuardedBackend(policy, resolver=resolver)
    transport = GuardedTransport(backend, limits=httpx.Limits(max_connections=4))
    return httpx.AsyncClient(transport=transport, timeout=2, follow_redirects=False)


@pytest.fixture
async def server() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class TestConnections:
    async def test_a_name_resolving_to_loopback_is_refused_unless_allowed(
        self, server: Receiver
    ) -> None:
        async with client(STRICT) as strict:
            with pytest.raises(httpx.ConnectError) as caught:
                await strict.post(server.url("/x", host="localhost"), content=b"{}")
        reason = refused(caught.value)
        assert reason is not None
        assert "refused localhost" in reason
        assert "loopback" in reason
        assert server.requests == []
        async with client(DEV) as dev:
            response = await dev.post(server.url("/x", host="localhost"), content=b"{}")
        assert response.status_code == 200
        assert len(server.requests) == 1

    async def test_ip_literals_are_checked_without_resolution(self, server: Receiver) -> None:
        async def no_dns(host: str, port: int) -> list[str]:
            raise AssertionError("an IP literal must not be resolved")

        async with client(STRICT, no_dns) as strict:
            for url in (server.url("/x"), f"http://[::1]:{server.port}/x"):
                with pytest.raises(httpx.ConnectError) as caught:
                    await strict.post(url, content=b"{}")
                assert refused(caught.value) is not None
        assert server.requests == []

    async def test_the_connection_goes_to_the_address_that_was_checked(
        self, server: Receiver
    ) -> None:
        answers: list[str] = []

        async def resolver(host: str, port: int) -> list[str]:
            answers.append(host)
            return ["127.0.0.1"]

        async with client(DEV, resolver) as dev:
            response = await dev.post(server.url("/pinned", host="shop.test"), content=b"{}")
        assert response.status_code == 200
        assert answers == ["shop.test"]  # resolved once, by the guard, for this connection
        [request] = server.requests
        assert request.headers["host"] == f"shop.test:{server.port}"

    async def test_one_private_answer_refuses_the_whole_name(self) -> None:
        async def resolver(host: str, port: int) -> list[str]:
            return ["93.184.215.14", "10.9.8.7"]

        async with client(STRICT, resolver) as strict:
            with pytest.raises(httpx.ConnectError) as caught:
                await strict.post("http://rebind.test/x", content=b"{}")
        assert "10.9.8.7 is a private address" in (refused(caught.value) or "")

    async def test_an_unresolvable_name_is_an_ordinary_connect_error(self) -> None:
        async def resolver(host: str, port: int) -> list[str]:
            raise OSError("Name or service not known")

        async with client(STRICT, resolver) as strict:
            with pytest.raises(httpx.ConnectError) as caught:
                await strict.post("http://nowhere.test/x", content=b"{}")
        assert refused(caught.value) is None


def claimed(url: str, attempt: int = 1) -> Claimed:
    return Claimed(
        id="wd_1",
        endpoint_id="we_1",
        event_id="evt_1",
        event_type="session.completed",
        payload=b'{"id":"evt_1"}',
        attempt=attempt,
        url=url,
        mode=Mode.TEST,
        secret="whsec_" + "a" * 44,
        previous_secret=None,
        previous_secret_expires_at=None,
        created_at=datetime.now(UTC),
    )


class TestSender:
    async def test_redirects_are_not_followed(self, server: Receiver) -> None:
        server.script("/moved", Reply(302, headers={"Location": "http://169.254.169.254/"}))
        async with client(DEV) as dev:
            sender = Sender(SingleClient(dev), RetryPolicy(jitter=0.0), timeout=2)
            outcome = await sender.attempt(claimed(server.url("/moved")))
        assert outcome.verdict is Verdict.RETRY
        assert outcome.status_code == 302
        assert outcome.retry_in == 15
        assert len(server.requests) == 1

    async def test_the_last_attempt_fails_for_good(self, server: Receiver) -> None:
        server.script("/down", Reply(500, body=b"x" * 5000))
        async with client(DEV) as dev:
            sender = Sender(SingleClient(dev), RetryPolicy(jitter=0.0), timeout=2)
            outcome = await sender.attempt(claimed(server.url("/down"), attempt=10))
        assert outcome.verdict is Verdict.FAILED
        assert outcome.error is not None
        assert outcome.error.startswith("HTTP 500: xxx")
        assert len(outcome.error) < 600  # only an excerpt of the body is kept

    async def test_a_repr_never_shows_the_secret(self) -> None:
        delivery = claimed("https://shop.example/hook")
        assert "whsec_" not in repr(delivery)


def _settings(**values: object) -> NotifierSettings:
    return NotifierSettings.model_validate(
        {
            "database_url": "postgresql://u@127.0.0.1/unused",
            "redis_url": "redis://127.0.0.1:1/0",
            "kafka_bootstrap_servers": "127.0.0.1:1",
            **values,
        }
    )


class TestLoopbackByEnvironment:
    """``make dev`` delivers to a developer's app on localhost; production never does."""

    @pytest.mark.parametrize(
        ("values", "allowed"),
        [
            ({"env": "development"}, True),
            ({"env": "test"}, False),
            ({"env": "production"}, False),
            ({"env": "development", "PAGO_WEBHOOK_ALLOW_LOOPBACK": False}, False),
            ({"env": "test", "PAGO_WEBHOOK_ALLOW_LOOPBACK": True}, True),
        ],
    )
    async def test_the_notifiers_client_reaches_localhost_only_when_allowed(
        self, values: dict[str, object], allowed: bool, server: Receiver
    ) -> None:
        clients = build_http_client(_settings(**values))
        try:
            http = clients.client("we_loopback")
            if allowed:
                response = await http.post(server.url("/x", host="localhost"), content=b"{}")
                assert response.status_code == 200
                assert len(server.requests) == 1
            else:
                with pytest.raises(httpx.ConnectError) as caught:
                    await http.post(server.url("/x", host="localhost"), content=b"{}")
                assert "loopback" in str(refused(caught.value))
                assert server.requests == []
        finally:
            await clients.aclose()

    def test_the_override_cannot_allow_loopback_in_production(self) -> None:
        with pytest.raises(ValidationError, match="must not be true in production"):
            _settings(env="production", PAGO_WEBHOOK_ALLOW_LOOPBACK=True)
        assert _settings(env="production").loopback_allowed is False
