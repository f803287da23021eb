"""The event contract's AsyncAPI document (``pago.common.asyncapi``), beside the OpenAPI one.

Public like ``/docs`` and ``/openapi.json`` (and rate limited per client IP like them), and
left out of the OpenAPI document as they are: it describes Kafka topics, not HTTP operations.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from pago.common import asyncapi

router = APIRouter(include_in_schema=False)


@router.get("/asyncapi.json")
async def asyncapi_json() -> Response:
    return Response(asyncapi.document_json(), media_type="application/json")


@router.get("/asyncapi")
async def asyncapi_html() -> HTMLResponse:
    return HTMLResponse(asyncapi.document_html())
