"""``TronNode``: one HTTP endpoint serving a ``TronChain`` as java-tron's full node does.

Served (``GET`` with a query string, or ``POST`` with a JSON body, as java-tron accepts both):
``wallet/getnowblock``, ``wallet/getblockbynum`` (``num``), ``wallet/getblockbyid`` (``value``),
``wallet/getblockbylimitnext`` (``startNum``, ``endNum`` exclusive, at most 100),
``wallet/gettransactioninfobyblocknum`` (``num``), ``wallet/gettransactioninfobyid`` and
``wallet/gettransactionbyid`` (``value``), ``wallet/getnodeinfo``, and the ``walletsolidity/``
twins of the block and receipt queries, which see only solidified blocks. Bad input answers
HTTP 200 with ``{"Error": "<java exception> : <message>"}``, as the servlets do.

Misbehaviour on demand, for failover tests: ``down("503")`` (a load balancer with no healthy
node), ``down("hang")`` (accepts, never answers: the client's timeout must fire),
``down("refuse")`` (the port is closed and open connections are cut), ``lag`` (serves the chain
as of ``lag`` blocks ago), ``freeze()`` (its head stops moving). Several nodes may serve one
chain: that is how a test has a healthy and a broken endpoint of the same network.

``/_node/*`` (POST, JSON) drives a node run as a subprocess (``python -m tests.support.tron_node``):
``state``, ``mine``, ``transfer``, ``payments``, ``prerender``, ``down``, ``up``.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Self

from aiohttp import web

from tests.support.tron_node import render
from tests.support.tron_node.chain import Block, TronChain
from tests.support.tron_node.encoding import b58, key_of

Handler = Callable[[dict[str, Any], bool], Awaitable[Any]]
DOWN_MODES = ("503", "hang", "refuse")
LIMIT_NEXT_MAX = 100


class _JavaError(Exception):
    """Printed as java-tron prints an exception: ``{"Error": "class <type> : <message>"}``."""

    def __init__(self, java_class: str, message: str) -> None:
        super().__init__(f"class {java_class} : {message}")


def _number(params: dict[str, Any], name: str, *, from_query: bool) -> int:
    value = params.get(name)
    if from_query:
        # java.lang.Long.parseLong on the raw query value.
        try:
            return int(str(value))
        except ValueError:
            shown = "null" if value is None else f'For input string: "{value}"'
            raise _JavaError("java.lang.NumberFormatException", shown) from None
    if value is None:
        return 0  # protobuf default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _JavaError("org.tron.core.services.http.JsonFormat$ParseException", f"{value!r}")
    try:
        return int(value)
    except ValueError:
        raise _JavaError(
            "org.tron.core.services.http.JsonFormat$ParseException", f"Not an int: {value}"
        ) from None


class TronNode:
    def __init__(
        self,
        chain: TronChain,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_size: int = 512,
    ) -> None:
        self.chain = chain
        self.host = host
        self.port = port
        self.mode = "up"
        self.lag = 0
        """Blocks this node trails the chain by."""
        self.frozen_at: int | None = None
        self.requests: Counter[str] = Counter()
        """Requests answered (or refused), by path."""
        self.api_keys: set[str] = set()
        """``TRON-PRO-API-KEY`` values seen."""
        self._cache: OrderedDict[tuple[str, str, bool], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._resume = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._routes: dict[str, Handler] = {
            "wallet/getnowblock": self._now_block,
            "wallet/getblockbynum": self._block_by_num,
            "wallet/getblockbyid": self._block_by_id,
            "wallet/getblockbylimitnext": self._block_by_limit_next,
            "wallet/gettransactioninfobyblocknum": self._infos_by_num,
            "wallet/gettransactioninfobyid": self._info_by_id,
            "wallet/gettransactionbyid": self._tx_by_id,
            "wallet/getnodeinfo": self._node_info,
            "walletsolidity/getnowblock": self._solid_now_block,
            "walletsolidity/getblockbynum": self._solid_block_by_num,
            "walletsolidity/gettransactioninfobyblocknum": self._solid_infos_by_num,
            "walletsolidity/gettransactioninfobyid": self._solid_info_by_id,
            "walletsolidity/getnodeinfo": self._node_info,
        }

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application(middlewares=[self._misbehave])
        for path in self._routes:
            app.router.add_route("*", "/" + path, self._serve)
        app.router.add_post("/_node/{command}", self._control)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await self._listen()
        return self.url

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._resume.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- misbehaviour ----------------------------------------------------------------------

    async def down(self, how: str = "503") -> None:
        if how not in DOWN_MODES:
            raise ValueError(f"down how? one of {DOWN_MODES}")
        self.mode = how
        self._resume.clear()
        if how == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        was = self.mode
        self.mode = "up"
        self._resume.set()
        if was == "refuse" and self._site is None and self._runner is not None:
            await self._listen()

    def freeze(self) -> None:
        """The head stops where it is now (a node that stopped syncing)."""
        self.frozen_at = self.top

    def thaw(self) -> None:
        self.frozen_at = None

    @web.middleware
    async def _misbehave(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_node/"):
            return await handler(request)
        self.requests[request.path.lstrip("/")] += 1
        if self.mode == "503":
            return web.Response(status=503, text="Service Temporarily Unavailable")
        if self.mode == "hang":
            await self._resume.wait()
        elif self.mode == "refuse":
            # A keep-alive connection from before the port closed: cut it.
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("node is down")
        return await handler(request)

    # -- the chain as this node sees it ----------------------------------------------------

    @property
    def top(self) -> int:
        """The newest block this node serves."""
        head = self.chain.head.number
        if self.frozen_at is not None:
            head = min(head, self.frozen_at)
        return max(0, head - self.lag)

    @property
    def solid(self) -> int:
        return max(0, self.top - self.chain.solid_lag)

    def _block(self, number: int, *, solid: bool = False) -> Block | None:
        if number > (self.solid if solid else self.top):
            return None
        return self.chain.block(number)

    def _cached(self, kind: str, block: Block, visible: bool, make: Callable[[], Any]) -> bytes:
        key = (kind, block.id, visible)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        body = json.dumps(make(), separators=(",", ":")).encode()
        self._cache[key] = body
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return body

    def _block_json(self, block: Block | None, visible: bool) -> bytes:
        if block is None:
            return b"{}"
        return self._cached("block", block, visible, lambda: render.block(block, visible))

    def _infos_json(self, block: Block | None, visible: bool) -> bytes:
        if block is None:
            return b"[]"  # java-tron: "no transactions or the blockNum is incorrect"
        return self._cached("infos", block, visible, lambda: render.infos(block, visible))

    def prerender(self) -> int:
        """Render every served block and its receipts now (the "recorded" answers a replay
        serves); returns how many blocks."""
        for number in range(self.top + 1):
            block = self.chain.block(number)
            if block is not None:
                self._block_json(block, False)
                self._infos_json(block, False)
        return self.top + 1

    # -- the API ---------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.Response:
        path = request.path.lstrip("/")
        key = request.headers.get("TRON-PRO-API-KEY")
        if key:
            self.api_keys.add(key)
        try:
            if request.method == "GET":
                params: dict[str, Any] = dict(request.query)
                visible = str(params.get("visible", "")).lower() == "true"
            elif request.method == "POST":
                text = (await request.read()).decode()
                params = json.loads(text) if text.strip() else {}
                if not isinstance(params, dict):
                    raise _JavaError("org.tron.json.JSONException", "not a JSON object")
                visible = bool(params.get("visible", False))
            else:
                return web.Response(status=405)
            params["__query__"] = request.method == "GET"
            answer = await self._routes[path](params, visible)
        except json.JSONDecodeError as exc:
            answer = {"Error": f"class org.tron.json.JSONException : {exc}"}
        except _JavaError as exc:
            answer = {"Error": str(exc)}
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return web.Response(body=body + b"\n", content_type="application/json")

    async def _now_block(self, params: dict[str, Any], visible: bool) -> Any:
        return self._block_json(self._block(self.top), visible)

    async def _block_by_num(self, params: dict[str, Any], visible: bool) -> Any:
        number = _number(params, "num", from_query=params["__query__"])
        return self._block_json(self._block(number), visible)

    async def _block_by_id(self, params: dict[str, Any], visible: bool) -> Any:
        found = self.chain.by_id(str(params.get("value", "")))
        if found is None or found.number > self.top:
            return b"{}"
        return self._block_json(found, visible)

    async def _block_by_limit_next(self, params: dict[str, Any], visible: bool) -> Any:
        query = params["__query__"]
        start = _number(params, "startNum", from_query=query)
        end = _number(params, "endNum", from_query=query)
        if not 0 < end - start <= LIMIT_NEXT_MAX or start < 0:
            return b"{}"
        blocks = [b for n in range(start, end) if (b := self._block(n)) is not None]
        if not blocks:
            return b"{}"
        return b'{"block":[' + b",".join(self._block_json(b, visible) for b in blocks) + b"]}"

    async def _infos_by_num(self, params: dict[str, Any], visible: bool) -> Any:
        number = _number(params, "num", from_query=params["__query__"])
        if number <= 0:
            return b"{}"
        return self._infos_json(self._block(number), visible)

    def _located(self, params: dict[str, Any], *, solid: bool = False) -> tuple[Block, Any] | None:
        found = self.chain.locate(str(params.get("value", "")).lower())
        if found is None or self._block(found[0].number, solid=solid) is None:
            return None
        return found

    async def _info_by_id(self, params: dict[str, Any], visible: bool) -> Any:
        found = self._located(params)
        return render.info(found[0], found[1], visible) if found else {}

    async def _tx_by_id(self, params: dict[str, Any], visible: bool) -> Any:
        found = self._located(params)
        return render.transaction(found[1], visible) if found else {}

    async def _node_info(self, params: dict[str, Any], visible: bool) -> Any:
        head = self.chain.block(self.top)
        solid = self.chain.block(self.solid)
        assert head is not None
        assert solid is not None
        return render.node_info(head, solid, begin_sync=max(0, self.top - 20))

    async def _solid_now_block(self, params: dict[str, Any], visible: bool) -> Any:
        return self._block_json(self._block(self.solid, solid=True), visible)

    async def _solid_block_by_num(self, params: dict[str, Any], visible: bool) -> Any:
        number = _number(params, "num", from_query=params["__query__"])
        return self._block_json(self._block(number, solid=True), visible)

    async def _solid_infos_by_num(self, params: dict[str, Any], visible: bool) -> Any:
        number = _number(params, "num", from_query=params["__query__"])
        if number <= 0:
            return b"{}"
        return self._infos_json(self._block(number, solid=True), visible)

    async def _solid_info_by_id(self, params: dict[str, Any], visible: bool) -> Any:
        found = self._located(params, solid=True)
        return render.info(found[0], found[1], visible) if found else {}

    # -- control (a node in a subprocess) --------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        command = request.match_info["command"]
        body = await request.json() if request.can_read_body else {}
        chain = self.chain
        result: dict[str, Any] = {}
        if command == "mine":
            made = chain.mine(int(body.get("blocks", 1)), noise=body.get("noise"))
            result = {"blocks": [b.number for b in made]}
        elif command == "transfer":
            tx = chain.trc20_transfer(
                key_of(body["token"]),
                key_of(body["to"]),
                int(body["amount"]),
                result=body.get("result", "SUCCESS"),
            )
            result = {"txid": tx.txid}
        elif command == "payments":
            recipients = [key_of(a) for a in body["recipients"]]
            # Minutes of hashing for a benchmark's chain: off the loop (nothing else runs).
            await asyncio.to_thread(
                chain.mine_payments,
                int(body["blocks"]),
                int(body["per_block"]),
                recipients,
                key_of(body["token"]),
            )
        elif command == "prerender":
            result = {"blocks": await asyncio.to_thread(self.prerender)}
            # Half a million transactions and their answers live here from now on: keep the
            # collector from walking them again on every request of a replay.
            gc.collect()
            gc.freeze()
        elif command == "down":
            await self.down(body.get("how", "503"))
        elif command == "up":
            await self.up()
        elif command != "state":
            return web.json_response({"error": f"unknown command {command}"}, status=404)
        result.update(
            head=self.top,
            solid=self.solid,
            head_id=chain.head.id,
            tokens=[b58(t) for t in chain.tokens],
            requests=sum(self.requests.values()),
        )
        return web.json_response(result)


async def produce(chain: TronChain, interval: float, stop: asyncio.Event) -> None:
    """Mine one block every ``interval`` seconds until ``stop`` (a live-looking chain)."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            chain.mine()
