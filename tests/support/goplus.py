"""A local stand-in for GoPlus ``address_security``, served over real HTTP for the matcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import parse_qs, urlsplit

CLEAN_RESULT = {
    "cybercrime": "0",
    "money_laundering": "0",
    "number_of_malicious_contracts_created": "0",
    "gas_abuse": "0",
    "financial_crime": "0",
    "darkweb_transactions": "0",
    "reinit": "0",
    "phishing_activities": "0",
    "contract_address": "-1",
    "fake_kyc": "0",
    "blacklist_doubt": "0",
    "fake_standard_interface": "0",
    "data_source": "",
    "stealing_attack": "0",
    "blackmail_activities": "0",
    "sanctioned": "0",
    "malicious_mining_activities": "0",
    "mixer": "0",
    "fake_token": "0",
    "honeypot_related_address": "0",
}
"""The shape of a real clean answer (every flag a stringified number)."""


class FakeGoPlus:
    """``mode``: ``ok`` answers from ``flags``; ``down`` answers 503; ``error`` answers HTTP 200
    with a GoPlus error code; ``slow`` never answers within any sane timeout."""

    def __init__(self) -> None:
        self.flags: dict[str, dict[str, str]] = {}
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def flag(self, address: str, *flags: str) -> None:
        self.flags[address.lower()] = dict.fromkeys(flags, "1")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _answer(self, target: str) -> tuple[int, dict[str, object]]:
        url = urlsplit(target)
        address = url.path.rsplit("/", 1)[-1]
        chain_id = parse_qs(url.query).get("chain_id", [""])[0]
        self.requests.append((address, chain_id))
        if self.mode == "down":
            return 503, {"message": "maintenance"}
        if self.mode == "error":
            return 200, {"code": 4029, "message": "too many requests", "result": None}
        result = {**CLEAN_RESULT, **self.flags.get(address.lower(), {})}
        return 200, {"code": 1, "message": "ok", "result": result}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            if self.mode == "slow":
                await asyncio.sleep(30)
            status, body = self._answer(request_line.split()[1])
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
