"""Shared contracts of Pago: money, the networks registry, domain enums, events and plumbing."""
