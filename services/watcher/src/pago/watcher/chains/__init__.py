"""Chain sources: one ``ChainSource`` implementation per chain family (the protocol is
``core/source.py``; the core imports nothing from here)."""
