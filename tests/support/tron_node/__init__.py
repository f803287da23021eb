"""A faithful local TRON full node for tests and benchmarks (no java-tron installs here).

``TronChain`` (``chain.py``) holds blocks and transactions and makes new ones (payments on
demand, random traffic, forks); ``TronNode`` (``server.py``) serves one chain over java-tron's
HTTP API, shaped as ``render.py`` prints it, and can go down or fall behind on demand;
``TronNodeProcess`` (``process.py``) runs a node in a subprocess (``python -m
tests.support.tron_node``) for benchmarks, where the node must not share the watcher's CPU.
``tests/contract/tron_node`` pins the answers to the documented API and to tronpy.
"""

from tests.support.tron_node.chain import Block, Log, TronChain, Tx
from tests.support.tron_node.encoding import b58, key_of
from tests.support.tron_node.server import TronNode

__all__ = ["Block", "Log", "TronChain", "TronNode", "Tx", "b58", "key_of"]
