"""The exact parse of a card session request: raw bytes → JSON with ``Decimal`` numbers →
:class:`CreateCardSessionRequest`, every failure an ``ApiError`` naming its field."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from pago.api.cards.schemas import CreateCardSessionRequest
from pago.api.errors import ApiError, InvalidRequest, ParameterMissing

MAX_DEPTH = 32


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def load_json(body: bytes) -> Any:
    """JSON with numbers as ``int`` (integers) and ``Decimal`` (the rest), never ``float``;
    NaN/Infinity and duplicate keys are refused."""
    if not body.strip():
        raise ParameterMissing("The request needs a JSON body.")
    try:
        return json.loads(
            body,
            parse_float=Decimal,
            parse_int=int,
            parse_constant=_no_constants,
            object_pairs_hook=_pairs,
        )
    except RecursionError:
        raise InvalidRequest(
            "The request body is nested too deeply.", code="invalid_json"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise InvalidRequest(
            f"The request body is not valid JSON ({str(exc)[:120]}).", code="invalid_json"
        ) from None


def param_of(loc: tuple[int | str, ...]) -> str | None:
    return ".".join(str(part) for part in loc) or None


def as_api_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    param = param_of(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        if param is None:
            return ParameterMissing("The request needs a JSON body.")
        return ParameterMissing(f"Missing required param: {param}.", param=param)
    if param is None:
        return InvalidRequest(f"Invalid request body: {msg}.")
    return InvalidRequest(f"Invalid {param}: {msg}.", param=param)


def parse_request(body: bytes) -> CreateCardSessionRequest:
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return CreateCardSessionRequest.model_validate(document)
    except ValidationError as exc:
        raise as_api_error(exc) from None
