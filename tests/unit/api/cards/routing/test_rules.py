"""``parse_rules``: what a merchant may ask of routing, checked the same way on write and read."""

from __future__ import annotations

import pytest

from pago.api.cards.routing.model import RoutingRules
from pago.api.cards.routing.rules import InvalidRules, parse_rules, parse_share, stored
from pago.common.enums import CardProvider

STRIPE, ADYEN, PAYPAL = CardProvider.STRIPE, CardProvider.ADYEN, CardProvider.PAYPAL


def test_each_rule_alone_and_their_stored_form() -> None:
    assert parse_rules(pin="stripe") == RoutingRules(pin=STRIPE)
    assert parse_rules(exclude=["adyen", "Adyen", "paypal"]) == RoutingRules(
        exclude=frozenset({ADYEN, PAYPAL})
    )
    split = parse_rules(split={"stripe": 70, "paypal": 30})
    assert split == RoutingRules(split={STRIPE: 70, PAYPAL: 30})
    assert stored(split) == {"pin": None, "exclude": [], "split": {"paypal": 30, "stripe": 70}}
    assert stored(parse_rules(pin="adyen", exclude=["stripe"])) == {
        "pin": "adyen",
        "exclude": ["stripe"],
        "split": None,
    }


def test_a_round_trip_through_the_stored_form_is_the_same_rules() -> None:
    for rules in (
        parse_rules(pin="paypal", exclude=["adyen"]),
        parse_rules(exclude=["stripe"], split={"adyen": 1, "paypal": 99}),
    ):
        assert parse_rules(**stored(rules)) == rules  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"pin": "worldpay"}, "pin 'worldpay' is not a card provider"),
        ({"exclude": ["stripe", "klarna"]}, "exclude 'klarna' is not a card provider"),
        ({"split": {"stripe": 70, "adyen": 20}}, "must sum to 100, not 90"),
        ({"split": {"stripe": 100, "adyen": 0}}, "share of adyen must be 1 to 100"),
        ({"split": {"stripe": 150, "adyen": -50}}, "share of stripe must be 1 to 100"),
        ({"split": {"stripe": 70.0, "adyen": 30}}, "share of stripe must be a whole percent"),
        ({"split": {"stripe": True, "adyen": 99}}, "share of stripe must be a whole percent"),
        ({"split": {"stripe": "70", "adyen": 30}}, "share of stripe must be a whole percent"),
        ({"split": {"stripe": 50, "STRIPE": 50}}, "split names stripe twice"),
        ({"pin": "stripe", "exclude": ["stripe"]}, "stripe cannot be both pinned and excluded"),
        ({"pin": "stripe", "split": {"stripe": 100}}, "a pin and a split contradict"),
        (
            {"exclude": ["adyen"], "split": {"adyen": 50, "paypal": 50}},
            "adyen cannot be both excluded and given a split share",
        ),
        ({}, "no rule given"),
        ({"exclude": []}, "no rule given"),
    ],
)
def test_refused(rules: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRules, match=message):
        parse_rules(**rules)  # type: ignore[arg-type]


def test_parse_share() -> None:
    assert parse_share("stripe=70") == ("stripe", 70)
    assert parse_share(" paypal = 30 ") == ("paypal", 30)
    for text, message in (
        ("stripe", "PROVIDER=PERCENT"),
        ("=30", "PROVIDER=PERCENT"),
        ("stripe=7.5", "not a whole percent"),
        ("stripe=", "not a whole"),
    ):
        with pytest.raises(InvalidRules, match=message):
            parse_share(text)
