"""The watcher: streams token transfers to watched deposit addresses from one chain into Kafka.

One process per network and mode (``pago-watcher --network BASE --mode live``). It knows Kafka
and the chain's RPC, nothing else: ``chain.watchlist`` in, ``chain.transfers`` and
``chain.cursors`` out. ``core/`` is chain-agnostic; ``chains/`` holds one ``ChainSource`` per
chain family.
"""
