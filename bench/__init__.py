"""Benchmarks: each measures Pago beside a baseline taken in the same run (``make bench``)."""
