"""A Solana transfer seen at ``confirmed`` commitment that is gone by the time its slot is
finalized (issue 11, Tests): published ``detected``, then ``reverted`` — never ``confirmed``,
so it is never credited (docs/solana-watcher.md, Stages and Finality).

Surfpool does not fork, so the fork is made at the RPC boundary: a JSON-RPC proxy in front of
a real Surfpool holds the finalized slot back while the watcher detects two real deposits,
then drops one of them from the chain as the endpoint shows it — gone from
``getSignaturesForAddress``, ``getSignatureStatuses`` answers null, ``getTransaction`` null —
and lets finality move on. Everything else is Surfpool's own answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from pago.common.enums import TransferStage
from pago.common.events import TransferObserved
from pago.common.topics import CHAIN_TRANSFERS
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.devstack.surfpool import Surfpool
from pago.watcher.app import create_app
from tests.support.rpc_proxy import JsonRpcProxy
from tests.support.watcher import (
    eventually,
    read_all,
    read_transfers,
    running,
    transfers_of,
)
from tests.support.watcher_solana import (
    TOKEN,
    chains_file,
    finalized_slot,
    owners,
    pay_fast,
    solana_settings,
    watch,
)


class ForkingProxy(JsonRpcProxy):
    """Surfpool as a node on the losing side of a fork would show it after the fact."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.held_final: int | None = None
        """While set, ``getSlot(finalized)`` answers no more than this."""
        self.dropped: set[str] = set()
        """Signatures no longer on the chain."""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        answer = await self._forward(body)
        if isinstance(body, list) and isinstance(answer, list):
            answer = [self._rewrite(c, a) for c, a in zip(body, answer, strict=True)]
        elif isinstance(body, dict) and isinstance(answer, dict):
            answer = self._rewrite(body, answer)
        return web.json_response(answer)

    def _rewrite(self, call: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        if "result" not in answer:
            return answer
        method, params, result = call.get("method"), call.get("params") or [], answer["result"]
        if method == "getSlot" and self.held_final is not None:
            if (
                params
                and isinstance(params[0], dict)
                and params[0].get("commitment") == "finalized"
            ):
                result = min(int(result), self.held_final)
        elif method == "getSignaturesForAddress" and isinstance(result, list):
            result = [e for e in result if e.get("signature") not in self.dropped]
        elif method == "getSignatureStatuses" and isinstance(result, dict):
            sigs = params[0]
            values = [
                None if s in self.dropped else v
                for s, v in zip(sigs, result["value"], strict=False)
            ]
            result = {**result, "value": values}
        elif method == "getTransaction" and params and params[0] in self.dropped:
            result = None
        return {**answer, "result": result}


def _stages(seen: list[TransferObserved], sig: str) -> list[TransferStage]:
    return [t.stage for t in seen if t.tx_hash == sig]


async def test_a_detected_transfer_gone_before_finality_is_reverted_never_confirmed(
    surfpool: Surfpool, broker: KafkaServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    kafka = broker.bootstrap_servers
    proxy = ForkingProxy(surfpool.rpc_url)
    await proxy.start()
    try:
        proxy.held_final = finalized_slot(surfpool)
        chains = chains_file(tmp_path / "chains.toml", surfpool, rpc_urls=[proxy.url])
        gone, kept = owners(2)
        await watch(kafka, [str(gone.pubkey()), str(kept.pubkey())])
        async with running(create_app(solana_settings(kafka, redis_server.url, chains))) as app:
            sig_gone, sig_kept = await pay_fast(
                surfpool, [("USDT", gone, 5 * TOKEN), ("USDT", kept, 6 * TOKEN)]
            )
            detected = await read_transfers(
                kafka,
                lambda f: (
                    {sig_gone, sig_kept}
                    <= {t.tx_hash for t in f if t.stage is TransferStage.DETECTED}
                ),
                timeout=30,
            )
            assert not [t for t in detected if t.stage is not TransferStage.DETECTED]
            slot = max(t.block_number for t in detected)
            # The fork: one deposit is no longer on the chain; finality moves on past it.
            proxy.dropped.add(sig_gone)
            proxy.held_final = None
            scanner = app.scanner
            assert scanner is not None
            await eventually(
                lambda: scanner.cursor is not None and scanner.cursor.number >= slot,
                timeout=30,
                what="the cursor to pass both deposits' slots",
            )
            # Everything up to the cursor was acked before it moved: this is the final word.
            seen = transfers_of(await read_all(kafka, CHAIN_TRANSFERS))
    finally:
        await proxy.stop()
    assert _stages(seen, sig_gone) == [TransferStage.DETECTED, TransferStage.REVERTED]
    assert _stages(seen, sig_kept) == [TransferStage.DETECTED, TransferStage.CONFIRMED]
    (reverted,) = [t for t in seen if t.stage is TransferStage.REVERTED]
    assert (reverted.to_address, reverted.amount_raw) == (str(gone.pubkey()), 5 * TOKEN)
