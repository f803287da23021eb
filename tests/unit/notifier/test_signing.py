"""Both signature schemes, checked against independent implementations."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pago.notifier.signing import signature_headers, standard_signature, x_signature

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = '{"id":"evt_1","event_type":"session.completed","data":{"name":"café"}}'.encode()


class TestXSignature:
    def test_is_ironixpays_hex_hmac_keyed_with_the_whole_secret_string(self) -> None:
        expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
        assert x_signature(SECRET, 1700000000, BODY) == expected

    def test_depends_on_the_timestamp(self) -> None:
        assert x_signature(SECRET, 1, BODY) != x_signature(SECRET, 2, BODY)


class TestStandardWebhooks:
    def test_the_reference_library_verifies_it(self) -> None:
        now = int(time.time())
        headers = signature_headers([SECRET], msg_id="evt_1", timestamp=now, body=BODY)
        assert Webhook(SECRET).verify(BODY, headers)["id"] == "evt_1"
        with pytest.raises(WebhookVerificationError):
            Webhook(OLD).verify(BODY, headers)

    def test_matches_the_reference_signer(self) -> None:
        from datetime import UTC, datetime

        reference = Webhook(SECRET).sign(
            "evt_1", datetime.fromtimestamp(1700000000, UTC), BODY.decode()
        )
        assert standard_signature(SECRET, "evt_1", 1700000000, BODY) == reference

    def test_a_secret_that_is_not_base64_is_refused(self) -> None:
        with pytest.raises(ValueError, match="base64"):
            standard_signature("whsec_not*base64", "evt_1", 1, BODY)


class TestRotation:
    def test_both_secrets_sign_while_the_previous_one_is_valid(self) -> None:
        now = int(time.time())
        headers = signature_headers([SECRET, OLD], msg_id="evt_2", timestamp=now, body=BODY)
        assert len(headers["webhook-signature"].split(" ")) == 2
        assert Webhook(SECRET).verify(BODY, headers)
        assert Webhook(OLD).verify(BODY, headers)
        assert headers["X-Signature"] == x_signature(SECRET, now, BODY)
        assert headers["X-Signature-Previous"] == x_signature(OLD, now, BODY)

    def test_one_secret_gives_one_signature(self) -> None:
        headers = signature_headers([SECRET], msg_id="evt_3", timestamp=5, body=BODY)
        assert "X-Signature-Previous" not in headers
        assert headers["X-Timestamp"] == headers["webhook-timestamp"] == "5"
        assert headers["webhook-id"] == "evt_3"

    def test_signing_needs_a_secret(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            signature_headers([], msg_id="evt_4", timestamp=5, body=BODY)
