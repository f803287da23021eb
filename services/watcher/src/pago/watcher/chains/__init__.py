"""Chain sources: one ``ChainSource`` implementation per chain family (see ``base.py``)."""
