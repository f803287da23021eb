"""Client secrets, sealed signing keys and the OAuth settings (pure)."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from pydantic import ValidationError

from pago.api.oauth.credentials import (
    decrypt_private_key,
    encrypt_private_key,
    generate_client_id,
    generate_client_secret,
    generate_signing_key,
    hash_client_secret,
    is_client_id,
    is_client_secret,
)
from pago.api.oauth.settings import OAuthSettings
from pago.common.settings import describe_validation_error

SECRET = b"s" * 32


class TestClientCredentials:
    def test_ids_and_secrets_have_their_format_and_are_random(self) -> None:
        assert is_client_id(generate_client_id())
        assert is_client_secret(generate_client_secret())
        assert generate_client_secret() != generate_client_secret()
        assert not is_client_secret("cs_short")
        assert not is_client_id("cli_XYZ")

    def test_the_secret_hash_is_peppered_and_apart_from_api_keys(self) -> None:
        secret = generate_client_secret()
        assert hash_client_secret(b"a", secret) != hash_client_secret(b"b", secret)
        assert len(hash_client_secret(b"a", secret)) == 32


class TestSealedKeys:
    def test_a_sealed_key_opens_only_with_its_secret_and_kid(self) -> None:
        key = generate_signing_key()
        pem = key.as_pem(private=True)
        sealed = encrypt_private_key(SECRET, str(key.kid), pem)
        assert pem not in sealed
        assert decrypt_private_key(SECRET, str(key.kid), sealed) == pem
        with pytest.raises(InvalidTag):
            decrypt_private_key(b"t" * 32, str(key.kid), sealed)
        with pytest.raises(InvalidTag):
            decrypt_private_key(SECRET, "another-kid", sealed)

    def test_the_kid_is_the_thumbprint_and_the_public_jwk_has_no_private_part(self) -> None:
        key = generate_signing_key()
        public = key.as_dict(private=False)
        assert public["kid"] == key.thumbprint()
        assert (public["kty"], public["crv"], public["alg"]) == ("EC", "P-256", "ES256")
        assert "d" not in public


class TestSettings:
    def test_production_requires_the_encryption_secret(self) -> None:
        with pytest.raises(ValidationError) as caught:
            OAuthSettings.model_validate({"env": "production"})
        line = describe_validation_error(OAuthSettings, caught.value)
        assert "PAGO_OAUTH_KEY_ENCRYPTION_SECRET is required in production" in line
        assert "\n" not in line
        ok = OAuthSettings.model_validate(
            {"env": "production", "oauth_key_encryption_secret": "x" * 32}
        )
        assert ok.oauth_encryption_secret == b"x" * 32

    def test_development_has_a_default_secret(self) -> None:
        assert len(OAuthSettings().oauth_encryption_secret) >= 32

    @pytest.mark.parametrize(
        ("values", "variable"),
        [
            ({"oauth_key_encryption_secret": "short"}, "at least 32"),
            ({"oauth_token_ttl_seconds": 10}, "PAGO_OAUTH_TOKEN_TTL_SECONDS"),
            ({"oauth_leeway_seconds": -1}, "PAGO_OAUTH_LEEWAY_SECONDS"),
            (
                {
                    "oauth_trusted_issuers": {
                        "https://idp": {"jwks_url": "ftp://x", "audience": "a"}
                    }
                },
                "PAGO_OAUTH_TRUSTED_ISSUERS",
            ),
            (
                {
                    "oauth_trusted_issuers": {
                        "https://idp": {
                            "jwks_url": "https://idp/jwks",
                            "audience": "a",
                            "algorithms": ["HS256"],
                        }
                    }
                },
                "PAGO_OAUTH_TRUSTED_ISSUERS",
            ),
        ],
    )
    def test_a_bad_value_is_one_line_naming_it(
        self, values: dict[str, object], variable: str
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            OAuthSettings.model_validate(values)
        line = describe_validation_error(OAuthSettings, caught.value)
        assert variable in line
        assert "\n" not in line

    def test_trusted_issuers_parse_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(
            "PAGO_OAUTH_TRUSTED_ISSUERS",
            '{"https://idp.example": {"jwks_url": "https://idp.example/jwks", "audience": "pago"}}',
        )
        issuer = OAuthSettings().oauth_trusted_issuers["https://idp.example"]
        assert (issuer.jwks_url, issuer.audience, issuer.algorithms) == (
            "https://idp.example/jwks",
            "pago",
            ("RS256", "ES256"),
        )
