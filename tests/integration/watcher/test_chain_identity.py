"""``pago-watcher`` pointed only at nodes of another chain: one clear line, exit 2, nothing
written (issue 11, item 8)."""

from __future__ import annotations

import os
from pathlib import Path

from pago.devstack.anvil import Anvil
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.redis_server import RedisServer
from pago.watcher.core.rpc import redact_url
from tests.support.processes import module, run_to_exit
from tests.support.watcher import chains_file


def test_a_watcher_whose_only_endpoint_serves_another_chain_exits_with_one_line(
    anvil: Anvil, broker: KafkaServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    chains = chains_file(tmp_path / "chains.toml", anvil, chain_id=1)  # mainnet, says the file
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAGO_")},
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "REDIS_URL": redis_server.url,
        "PAGO_CHAINS_FILE": str(chains),
        "PAGO_WATCHER_HTTP_PORT": "0",
    }
    env.pop("DATABASE_URL", None)
    result = run_to_exit(module("pago.watcher", "--network", "ETHEREUM", "--mode", "test"), env)
    assert result.returncode == 2, result.stderr
    # The JSON log (stdout) says which endpoint was refused; stderr has the one line.
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "pago-watcher: ETHEREUM: no RPC endpoint serves the configured chain (1): "
        f"{redact_url(anvil.rpc_url)} serves {anvil.chain_id}"
    )
