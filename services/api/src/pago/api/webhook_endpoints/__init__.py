"""Webhook endpoints: where a merchant's signed webhooks go, their secrets and delivery log."""
