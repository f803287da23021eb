"""The exact parse of ``POST /api/v1/sessions`` bodies: never a float, every error named."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pago.api.cards.parsing import load_json, parse_request
from pago.api.errors import ApiError

SEED = Path(__file__).parents[4] / "tests" / "support" / "cards" / "seed_request.json"


def seed() -> dict[str, Any]:
    document: dict[str, Any] = load_json(SEED.read_bytes())
    return document


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, default=str).encode()


def raw(document: dict[str, Any]) -> bytes:
    """Decimals written as JSON numbers (``json.dumps`` would quote them)."""

    class Encoder(json.JSONEncoder):
        def iterencode(self, o: Any, _one_shot: bool = False) -> Any:
            return super().iterencode(_numbers(o), _one_shot)

    return Encoder().encode(document).replace('"__n:', "").replace(':n__"', "").encode()


def _numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"__n:{value}:n__"
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def error_of(data: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_request(data)
    return caught.value


class TestLoadJson:
    def test_numbers_are_never_floats(self) -> None:
        document = load_json(b'{"a": 0.1, "b": 140.76, "c": 1e2, "d": 3}')
        assert document == {"a": Decimal("0.1"), "b": Decimal("140.76"), "c": Decimal("1E+2"),
                            "d": 3}  # fmt: skip
        assert not any(isinstance(v, float) for v in document.values())

    @pytest.mark.parametrize("text", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a":1,"a":2}', b"{"])
    def test_refused(self, text: bytes) -> None:
        with pytest.raises(ApiError) as caught:
            load_json(text)
        assert caught.value.code == "invalid_json"


class TestParse:
    def test_the_seeds_body(self) -> None:
        request = parse_request(SEED.read_bytes())
        assert request.amount.total == Decimal("140.76")
        assert request.amount.shipping == Decimal("9.95")
        assert request.order_items is not None
        assert request.order_items[0].unit_price == Decimal(119)
        assert request.customer.billing_address.country == "AU"
        assert request.additional_information == {
            "campaignId": "summer-sale-2024", "referralCode": "REF-ABC"
        }  # fmt: skip

    def test_decimal_strings_are_accepted(self) -> None:
        document = seed()
        document["amount"] = {"total": "140.76", "shipping": "9.95", "tax": "11.81"}
        assert parse_request(body(document)).amount.total == Decimal("140.76")

    @pytest.mark.parametrize(
        ("path", "value", "param"),
        [
            (("paymentMethod",), "paypal", "paymentMethod"),
            (("currency",), "AU", "currency"),
            (("amount", "total"), -1, "amount.total"),
            (("amount", "total"), True, "amount.total"),
            (("amount", "tax"), "1,5", "amount.tax"),
            (("orderItems", 0, "quantity"), 0, "orderItems.0.quantity"),
            (("orderItems", 0, "quantity"), Decimal("1.5"), "orderItems.0.quantity"),
            (("customer", "email"), "nope", "customer.email"),
            (("customer", "billingAddress", "country"), "AUS", "customer.billingAddress.country"),
            (("redirectUrls", "success"), "ftp://x", "redirectUrls.success"),
            (("orderReference",), "x" * 256, "orderReference"),
            (("additionalInformation",), {"k": {"nested": 1}}, "additionalInformation"),
        ],
    )
    def test_bad_field_is_named(self, path: tuple[Any, ...], value: Any, param: str) -> None:
        document = copy.deepcopy(seed())
        target: Any = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        error = error_of(raw(document))
        assert error.status_code == 400
        assert error.param == param

    @pytest.mark.parametrize(
        "field", ["orderReference", "paymentMethod", "currency", "amount", "customer",
                  "redirectUrls"]
    )  # fmt: skip
    def test_required(self, field: str) -> None:
        document = seed()
        del document[field]
        error = error_of(raw(document))
        assert (error.code, error.param) == ("parameter_missing", field)

    def test_not_an_object(self) -> None:
        assert error_of(b"[]").status_code == 400
