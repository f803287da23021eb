"""Helpers of the tests in this folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from pago.api.webhook_endpoints.service import WebhookEndpointService
from pago.api.webhook_endpoints.settings import WebhookSettings
from tests.support.api import services_replaced


@contextmanager
def webhook_settings(app: FastAPI, **values: object) -> Iterator[None]:
    """Run the webhook endpoints API with these settings (the environment is not read)."""
    service = WebhookEndpointService(WebhookSettings.model_validate(values))
    with services_replaced(app, webhook_endpoints=service):
        yield
