"""A merchant's routing rules from their stored or typed form, validated (pure, no I/O).

One rule set per merchant and mode (``card_routing_rules``), written by ``pago-admin card-rules
set`` and read by the card service for every create. The same checks guard both sides, so a
rule the scorer receives is always one ``pago-admin`` would have accepted:

- every provider is a ``CardProvider`` value;
- a split's shares are whole percents, each 1–100, summing to exactly 100;
- a pinned provider is not also excluded, nor is a provider with a share;
- a pin and a split exclude each other (a pin would make the split moot whenever the pinned
  provider can take the order);
- at least one of pin, exclude, split (no rules at all is no row).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pago.api.cards.routing.model import RoutingRules
from pago.common.enums import CardProvider

SPLIT_TOTAL = 100


class InvalidRules(ValueError):
    """The rules contradict themselves or name what is not a provider; ``str`` says why."""


def _provider(name: object, what: str) -> CardProvider:
    try:
        return CardProvider(str(name).strip().lower())
    except ValueError:
        known = ", ".join(p.value for p in CardProvider)
        raise InvalidRules(f"{what} {name!r} is not a card provider ({known})") from None


def parse_rules(
    *,
    pin: str | None = None,
    exclude: Iterable[str] = (),
    split: Mapping[str, object] | None = None,
) -> RoutingRules:
    """``RoutingRules`` from provider names and percent shares; ``InvalidRules`` if not valid."""
    pinned = _provider(pin, "pin") if pin is not None else None
    excluded = frozenset(_provider(name, "exclude") for name in exclude)
    shares: dict[CardProvider, int] | None = None
    if split is not None:
        shares = {}
        for name, share in split.items():
            provider = _provider(name, "split")
            if provider in shares:
                raise InvalidRules(f"split names {provider} twice")
            if isinstance(share, bool) or not isinstance(share, int):
                raise InvalidRules(f"split share of {provider} must be a whole percent")
            if not 1 <= share <= SPLIT_TOTAL:
                raise InvalidRules(f"split share of {provider} must be 1 to {SPLIT_TOTAL}")
            shares[provider] = share
        if sum(shares.values()) != SPLIT_TOTAL:
            raise InvalidRules(
                f"split shares must sum to {SPLIT_TOTAL}, not {sum(shares.values())}"
            )
    if pinned is not None and pinned in excluded:
        raise InvalidRules(f"{pinned} cannot be both pinned and excluded")
    if pinned is not None and shares is not None:
        raise InvalidRules("a pin and a split contradict each other: choose one")
    if shares is not None and (both := sorted(excluded & shares.keys())):
        raise InvalidRules(f"{', '.join(both)} cannot be both excluded and given a split share")
    if pinned is None and not excluded and shares is None:
        raise InvalidRules("no rule given: pin, exclude or split")
    return RoutingRules(pin=pinned, exclude=excluded, split=shares)


def parse_share(text: str) -> tuple[str, int]:
    """``stripe=70`` → ``("stripe", 70)`` (the command line's ``--split``)."""
    name, sep, share = text.partition("=")
    if not sep or not name.strip():
        raise InvalidRules(f"split {text!r} must be PROVIDER=PERCENT, e.g. stripe=70")
    try:
        return name.strip(), int(share.strip())
    except ValueError:
        raise InvalidRules(f"split share {share!r} is not a whole percent") from None


def stored(rules: RoutingRules) -> dict[str, object]:
    """The columns of ``card_routing_rules`` for ``rules`` (providers as their values)."""
    return {
        "pin": rules.pin.value if rules.pin is not None else None,
        "exclude": sorted(p.value for p in rules.exclude),
        "split": (
            {p.value: share for p, share in sorted(rules.split.items())}
            if rules.split is not None
            else None
        ),
    }
