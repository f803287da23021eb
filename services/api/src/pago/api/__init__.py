"""The api service: Checkout Sessions (IronixPay-compatible), auth, pricing, deposit addresses.

Thin by design: it validates, prices, allocates an address and writes the session with its
events (outbox) in one transaction; it never talks to a chain.
"""
