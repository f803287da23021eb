"""Deposit addresses: watch-only derivation from account xpubs, and imported pools."""
