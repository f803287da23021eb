"""A local card-provider server (Stripe, Adyen, PayPal) for tests and ``make dev``.

No registry package fakes any provider's hosted checkout sessions, so this one is written from
each provider's published API reference and kept honest by contract tests (field names, status
words, signature schemes and their published test vectors).
"""
