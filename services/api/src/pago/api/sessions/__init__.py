"""Checkout Sessions: create, retrieve, list and expire (IronixPay-compatible)."""
