"""Card settings: the environment names other parts use, exact fees, validation at start."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from pago.api.cards.providers.base import Capabilities
from pago.api.cards.routing.model import FeeSchedule, Weights
from pago.api.cards.settings import CardSettings
from pago.common.enums import CardProvider

CREDENTIALS = {
    "PAGO_CARD_STRIPE_API_KEY": "sk_test_1",
    "PAGO_CARD_STRIPE_WEBHOOK_SECRET": "whsec_1",
    "PAGO_CARD_ADYEN_API_KEY": "AQE1",
    "PAGO_CARD_ADYEN_MERCHANT_ACCOUNT": "PagoECOM",
    "PAGO_CARD_ADYEN_HMAC_KEY": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "PAGO_CARD_PAYPAL_CLIENT_ID": "client-1",
    "PAGO_CARD_PAYPAL_CLIENT_SECRET": "secret-1",
    "PAGO_CARD_PAYPAL_WEBHOOK_ID": "WH-1",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


class TestDefaults:
    def test_nothing_enabled_and_the_documented_defaults(self) -> None:
        settings = CardSettings()
        assert settings.enabled_providers == []
        assert settings.session_ttl_minutes == 60
        assert settings.weights == Weights()
        assert settings.fee_schedules() == {}


class TestEnvironment:
    def test_the_shared_variable_names(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("PAGO_CARD_ENABLED_PROVIDERS", "stripe, Adyen,paypal")
        env.setenv("PAGO_CARD_STRIPE_BASE_URL", "http://127.0.0.1:9000/stripe")
        env.setenv("PAGO_CARD_ADYEN_BASE_URL", "http://127.0.0.1:9000/adyen")
        env.setenv("PAGO_CARD_PAYPAL_BASE_URL", "http://127.0.0.1:9000/paypal")
        env.setenv("PAGO_CARD_CREATE_DEADLINE_SECONDS", "8")
        env.setenv("PAGO_CARD_SESSION_TTL_MINUTES", "90")
        settings = CardSettings()
        assert settings.enabled_providers == list(CardProvider)
        assert settings.stripe_base_url == "http://127.0.0.1:9000/stripe"
        assert settings.adyen_base_url == "http://127.0.0.1:9000/adyen"
        assert settings.paypal_base_url == "http://127.0.0.1:9000/paypal"
        assert settings.stripe_api_key is not None
        assert settings.stripe_api_key.get_secret_value() == "sk_test_1"
        assert "sk_test_1" not in repr(settings)
        assert settings.adyen_merchant_account == "PagoECOM"
        assert settings.paypal_webhook_id == "WH-1"
        assert settings.create_deadline_seconds == 8
        assert settings.session_ttl_minutes == 90

    def test_an_enabled_provider_without_its_credentials_stops_the_start(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PAGO_CARD_ENABLED_PROVIDERS", "adyen")
        monkeypatch.setenv("PAGO_CARD_ADYEN_API_KEY", "AQE1")
        monkeypatch.setenv("PAGO_CARD_ADYEN_HMAC_KEY", "00")
        with pytest.raises(ValidationError, match="PAGO_CARD_ADYEN_MERCHANT_ACCOUNT is required"):
            CardSettings()

    def test_an_unknown_provider_is_refused(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("PAGO_CARD_ENABLED_PROVIDERS", "stripe,worldpay")
        with pytest.raises(ValidationError, match="enabled_providers"):
            CardSettings()


class TestFees:
    def test_fees_are_exact_decimals_and_minor_units(self, env: pytest.MonkeyPatch) -> None:
        env.setenv(
            "PAGO_CARD_FEES",
            '{"stripe": {"percent": 2.9, "fixed": {"AUD": 30, "JPY": 0}},'
            ' "paypal": {"percent": "3.49"}}',
        )
        assert CardSettings().fee_schedules() == {
            CardProvider.STRIPE: FeeSchedule(Decimal("2.9"), {"AUD": 30, "JPY": 0}),
            CardProvider.PAYPAL: FeeSchedule(Decimal("3.49"), {}),
        }

    @pytest.mark.parametrize(
        "fees",
        [
            '{"stripe": {"percent": "-1"}}',
            '{"stripe": {"percent": "101"}}',
            '{"stripe": {"percent": "2.9", "fixed": {"AUD": 30.5}}}',
            '{"stripe": {"percent": "2.9", "fixed": {"aud": 30}}}',
            '{"stripe": {"percent": "2.9", "surcharge": 1}}',
            '{"worldpay": {"percent": "2.9"}}',
            "not json",
        ],
    )
    def test_a_bad_fee_schedule_is_refused(self, env: pytest.MonkeyPatch, fees: str) -> None:
        env.setenv("PAGO_CARD_FEES", fees)
        with pytest.raises((ValidationError, ValueError)):
            CardSettings()


class TestCapabilities:
    DECLARED = Capabilities(frozenset({"AUD", "USD"}), frozenset({"AU"}), {"AUD": 50}, {})

    def test_an_override_replaces_only_the_keys_it_gives(self, env: pytest.MonkeyPatch) -> None:
        env.setenv(
            "PAGO_CARD_CAPABILITIES",
            '{"adyen": {"countries": null, "max_amount": {"AUD": 1000000}}}',
        )
        settings = CardSettings()
        assert settings.capabilities_for(CardProvider.ADYEN, self.DECLARED) == Capabilities(
            frozenset({"AUD", "USD"}), None, {"AUD": 50}, {"AUD": 1_000_000}
        )
        assert settings.capabilities_for(CardProvider.STRIPE, self.DECLARED) == self.DECLARED

    def test_a_bad_country_code_is_refused(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("PAGO_CARD_CAPABILITIES", '{"adyen": {"countries": ["AUS"]}}')
        with pytest.raises(ValidationError, match="alpha-2"):
            CardSettings()


class TestRouting:
    def test_weights_must_sum_to_one(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("PAGO_CARD_WEIGHT_CONVERSION", "0.5")
        with pytest.raises(ValidationError, match="sum to 1"):
            CardSettings()

    def test_weights_from_the_environment(self, env: pytest.MonkeyPatch) -> None:
        for name, value in {
            "CONVERSION": "0.7",
            "AVAILABILITY": "0.3",
            "COST": "0",
            "LATENCY": "0",
        }.items():
            env.setenv(f"PAGO_CARD_WEIGHT_{name}", value)
        assert CardSettings().weights == Weights(
            Decimal("0.7"), Decimal("0.3"), Decimal(0), Decimal(0)
        )

    def test_breaker_values_and_a_probe_longer_than_a_create(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("PAGO_CARD_BREAKER_FAILURE_THRESHOLD", "3")
        env.setenv("PAGO_CARD_BREAKER_ERROR_RATE", "0.25")
        env.setenv("PAGO_CARD_CREATE_TIMEOUT_SECONDS", "7")
        breaker = CardSettings().breaker
        assert breaker.failure_threshold == 3
        assert breaker.error_rate == Decimal("0.25")
        assert breaker.probe_seconds > 7

    def test_the_timeout_must_fit_in_the_deadline(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("PAGO_CARD_CREATE_TIMEOUT_SECONDS", "20")
        env.setenv("PAGO_CARD_CREATE_DEADLINE_SECONDS", "10")
        with pytest.raises(ValidationError, match="DEADLINE"):
            CardSettings()

    @pytest.mark.parametrize("minutes", ["29", "1441"])
    def test_the_session_ttl_fits_stripe(self, env: pytest.MonkeyPatch, minutes: str) -> None:
        env.setenv("PAGO_CARD_SESSION_TTL_MINUTES", minutes)
        with pytest.raises(ValidationError, match="session_ttl_minutes"):
            CardSettings()
