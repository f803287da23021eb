"""``python -m tests.support.tron_node``: one node on its own chain, until SIGTERM or stdin
closes. Prints one JSON line ``{"url": …}`` once it listens; drive it through ``/_node/*``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from tests.support.tron_node.chain import TronChain
from tests.support.tron_node.encoding import key_of
from tests.support.tron_node.server import TronNode, produce


async def _serve(args: argparse.Namespace) -> None:
    chain = TronChain(tokens=[key_of(t) for t in args.token], seed=args.seed, noise=args.noise)
    node = TronNode(chain, host=args.host, port=args.port, cache_size=args.cache_size)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The parent closing our stdin (it died) stops us too.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    miner = asyncio.create_task(produce(chain, args.block_time, stop)) if args.block_time else None
    print(json.dumps({"url": node.url}), flush=True)  # noqa: T201 - the parent reads this line
    await stop.wait()
    if miner is not None:
        await miner
    await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="tron_node", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=[], help="registry token (T…)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=int, default=3, help="random transactions per block")
    parser.add_argument("--cache-size", type=int, default=512, help="rendered answers kept")
    parser.add_argument("--block-time", type=float, default=0.0, help="mine every N s (0: off)")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
