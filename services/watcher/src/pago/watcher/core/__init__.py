"""The chain-agnostic machinery: watch set, cursor, stages, reorgs, scanning, leadership, RPC."""
