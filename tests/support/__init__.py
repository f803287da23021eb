"""Helpers shared by tests (real clients, no mocks of our own code)."""
