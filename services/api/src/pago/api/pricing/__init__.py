"""Pricing: fiat and token prices to a token amount, with exchange rates from a provider."""
