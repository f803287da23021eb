"""The Postgres schema as SQLAlchemy Core tables, for repositories to query.

Migrations (``migrations/versions``) are the source of truth for DDL; a test compares the
migrated database with these tables so the two cannot drift. Token amounts are
``NUMERIC(78,0)`` base units (a uint256 fits) with the token's ``decimals`` beside them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from pago.common.enums import LIVE_STATUSES

metadata = MetaData()

Units = Numeric(78, 0)
"""Token base units (uint256-wide)."""


def live_status(column: str = "status") -> str:
    """``column IN ('Pending', 'Underpaid')``: SQL true for a session in ``LIVE_STATUSES``.

    Written out as literals, as the partial indexes' predicates are: the planner uses such an
    index only for a query whose ``WHERE`` implies the predicate, which a bind parameter in a
    generic plan does not.
    """
    values = ", ".join(f"'{status.value}'" for status in LIVE_STATUSES)
    return f"{column} IN ({values})"


def _created() -> Column[Any]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


merchants = Table(
    "merchants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("logo_url", Text),
    Column("fee_rate", Numeric(10, 6), comment="fraction of received; NULL = platform default"),
    Column("fee_floor", Numeric(38, 18), comment="whole tokens; NULL = platform default"),
    Column("session_expiry_minutes", Integer, nullable=False, server_default=text("30")),
    Column("underpaid_extension_minutes", Integer, nullable=False, server_default=text("1440")),
    Column("underpayment_tolerance", Numeric(38, 18), comment="whole tokens; NULL = default"),
    _created(),
    Column(
        "duplicate_order_guard",
        Boolean,
        nullable=False,
        server_default=text("true"),
        comment="a repeated client_reference_id answers the existing session",
    ),
    Column("accent_color", Text, comment="#rrggbb; NULL = Pago's"),
    Column(
        "underpayment_tolerance_percent",
        Numeric(7, 4),
        comment="percent of the amount due; NULL = the absolute tolerance applies",
    ),
)

console_users = Table(
    "console_users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("email", Text, nullable=False, unique=True, comment="lower-cased"),
    Column("role", Text, nullable=False, comment="owner, developer or support"),
    Column("password_hash", Text, nullable=False, comment="argon2id"),
    Column("totp_secret", LargeBinary, comment="encrypted at rest; NULL = no second factor"),
    Column("totp_enabled_at", DateTime(timezone=True)),
    Column("failed_sign_ins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", DateTime(timezone=True)),
    Column("last_sign_in_at", DateTime(timezone=True)),
    Column("disabled_at", DateTime(timezone=True)),
    _created(),
    CheckConstraint("role IN ('owner', 'developer', 'support')", name="console_users_role_check"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True, comment="SHA-256 of the cookie"),
    Column("user_id", Text, ForeignKey("console_users.id"), nullable=False),
    Column("mode", Text, nullable=False, comment="test or live: what the user views"),
    Column(
        "second_factor_at",
        DateTime(timezone=True),
        comment="when this session passed TOTP; NULL = password only",
    ),
    _created(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("console_sessions_user_idx", "user_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("mode", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False, unique=True, comment="HMAC-SHA256(pepper)"),
    Column("key_hint", Text, nullable=False, comment="prefix and last 4 characters, for display"),
    Column("label", Text),
    _created(),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_api_keys_merchant", "merchant_id"),
)

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("id", Text, primary_key=True, comment="the public client_id, cli_…"),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("mode", Text, nullable=False),
    Column(
        "secret_hash",
        LargeBinary,
        unique=True,
        comment="HMAC-SHA256(pepper); NULL for a client of an external issuer",
    ),
    Column("secret_hint", Text, comment="prefix and last 4 characters, for display"),
    Column("scopes", ARRAY(Text), nullable=False, comment="the scopes it may be granted"),
    Column("label", Text),
    Column("external_issuer", Text, comment="iss of the trusted OIDC issuer it signs in through"),
    Column("external_subject", Text, comment="sub of its tokens at that issuer"),
    _created(),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_oauth_clients_merchant", "merchant_id"),
    UniqueConstraint("external_issuer", "external_subject", name="uq_oauth_clients_external"),
    CheckConstraint(
        "(secret_hash IS NULL) = (external_issuer IS NOT NULL AND external_subject IS NOT NULL)",
        name="ck_oauth_clients_one_credential",
    ),
)

oauth_signing_keys = Table(
    "oauth_signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("algorithm", Text, nullable=False),
    Column("public_jwk", JSONB, nullable=False),
    Column(
        "private_key",
        LargeBinary,
        nullable=False,
        comment="PKCS#8 PEM under AES-256-GCM (nonce || ciphertext), key from HKDF of "
        "PAGO_OAUTH_KEY_ENCRYPTION_SECRET, the kid as associated data",
    ),
    _created(),
    Column("not_before", DateTime(timezone=True), nullable=False, comment="signs from then on"),
    Column(
        "retire_at",
        DateTime(timezone=True),
        comment="unpublished from then on: its successor's start plus the token lifetime",
    ),
    Index("ix_oauth_signing_keys_not_before", "not_before", unique=True),
)

sub_merchants = Table(
    "sub_merchants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _created(),
    UniqueConstraint("merchant_id", "code", name="uq_sub_merchants_code"),
)

deposit_xpubs = Table(
    "deposit_xpubs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("family", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("xpub", Text, nullable=False),
    Column("index_sequence", Text, nullable=False, comment="Postgres sequence of child indexes"),
    _created(),
    Column("retired_at", DateTime(timezone=True)),
    Index(
        "uq_deposit_xpubs_active",
        "merchant_id",
        "family",
        "mode",
        unique=True,
        postgresql_where=text("retired_at IS NULL"),
    ),
)

deposit_addresses = Table(
    "deposit_addresses",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("family", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("source", Text, nullable=False, comment="xpub:<id> or pool"),
    Column("derivation_index", BigInteger),
    Column("session_id", Text, comment="the session holding it now; NULL = free"),
    Column("leased_until", DateTime(timezone=True)),
    _created(),
    Column(
        "released_at",
        DateTime(timezone=True),
        comment="when its last session ended: the later of expires_at and the terminal "
        "time; NULL while leased or never used",
    ),
    UniqueConstraint("family", "mode", "address", name="uq_deposit_addresses_address"),
    Index(
        "ix_deposit_addresses_free",
        "merchant_id",
        "family",
        "mode",
        "id",
        postgresql_where=text("session_id IS NULL"),
    ),
    Index(
        "ix_deposit_addresses_released",
        "merchant_id",
        "family",
        "mode",
        "released_at",
        "id",
        postgresql_where=text("source = 'pool' AND released_at IS NOT NULL"),
    ),
)

checkout_sessions = Table(
    "checkout_sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("sub_merchant_id", Text, ForeignKey("sub_merchants.id")),
    Column("mode", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("network", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("currency_contract", Text, nullable=False),
    Column("decimals", SmallInteger, nullable=False),
    Column("amount_expected", Units, nullable=False),
    Column("amount_received", Units, nullable=False, server_default=text("0")),
    Column("fee_amount", Units, nullable=False, server_default=text("0")),
    Column("net_amount", Units, nullable=False, server_default=text("0")),
    Column("pay_address", Text, nullable=False),
    Column("client_reference_id", Text),
    Column("pricing_currency", Text, nullable=False),
    Column("pricing_amount", Text, nullable=False, comment="exactly as the merchant sent it"),
    Column("exchange_rate", Numeric(30, 8), nullable=False),
    Column("success_url", Text),
    Column("cancel_url", Text),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    _created(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False, server_default=text("0"), comment="CAS counter"),
    Column(
        "detection_rpc_url",
        Text,
        comment="from the chains registry at creation, like currency_contract",
    ),
    Column(
        "timed_out",
        Boolean,
        nullable=False,
        server_default=text("false"),
        comment="expired by the expiry job, not the merchant: an in-time payment still credits",
    ),
    Index("ix_sessions_list", "merchant_id", "mode", "created_at", "id"),
    Index("ix_sessions_list_status", "merchant_id", "mode", "status", "created_at"),
    Index("ix_sessions_sub_merchant", "sub_merchant_id", "mode", "created_at"),
    Index("ix_sessions_pay_address", "network", "mode", "pay_address"),
    Index("ix_sessions_client_ref", "merchant_id", "client_reference_id"),
    Index(
        "ix_sessions_expiring",
        "expires_at",
        postgresql_where=text(live_status()),
    ),
    Index(
        "ix_sessions_list_own",
        "merchant_id",
        "mode",
        "created_at",
        "id",
        postgresql_where=text("sub_merchant_id IS NULL"),
    ),
    Index(
        "uq_sessions_live_pay_address",
        "mode",
        "pay_address",
        unique=True,
        postgresql_where=text(live_status()),
    ),
    Index(
        "ix_sessions_order_guard",
        "merchant_id",
        "mode",
        "client_reference_id",
        "created_at",
        "id",
        postgresql_where=text("client_reference_id IS NOT NULL"),
    ),
)
# The matcher finds a session by the address a watcher reported; EVM hex is case-insensitive
# (EIP-55 case is a checksum) and watchers need not spell it as the API stored it.
Index(
    "ix_sessions_pay_address_ci",
    checkout_sessions.c.network,
    checkout_sessions.c.mode,
    func.lower(checkout_sessions.c.pay_address),
)

session_transactions = Table(
    "session_transactions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("session_id", Text, ForeignKey("checkout_sessions.id"), nullable=False),
    Column("network", Text, nullable=False),
    Column("tx_hash", Text, nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("token", Text, nullable=False),
    Column("contract", Text, nullable=False),
    Column("amount", Units, nullable=False),
    Column("decimals", SmallInteger, nullable=False),
    Column("from_address", Text, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("block_hash", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("credited", Boolean, nullable=False, server_default=text("false")),
    Column("confirmations", Integer, nullable=False, server_default=text("0")),
    Column("aml_flags", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    _created(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("block_time", DateTime(timezone=True), comment="the block's timestamp; NULL = unknown"),
    UniqueConstraint("network", "tx_hash", "log_index", name="uq_session_transactions_identity"),
    Index("ix_session_transactions_session", "session_id"),
    Index("ix_session_transactions_tx_hash", "tx_hash"),
)

payment_exceptions = Table(
    "payment_exceptions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("checkout_sessions.id"), nullable=False),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("mode", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("network", Text, nullable=False),
    Column("tx_hash", Text, nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("amount", Units, nullable=False),
    Column("decimals", SmallInteger, nullable=False),
    Column("detail", Text, nullable=False, server_default=text("''")),
    Column("resolution_note", Text),
    _created(),
    Column("resolved_at", DateTime(timezone=True)),
    Column("token", Text, comment="token of amount; may differ from the session's (wrong_token)"),
    Column("requested_action", Text, comment="an operator's resolution the matcher has to apply"),
    Column("requested_at", DateTime(timezone=True)),
    Column("resolution_error", Text, comment="why the matcher refused the requested action"),
    UniqueConstraint("kind", "network", "tx_hash", "log_index", name="uq_payment_exceptions_once"),
    Index("ix_payment_exceptions_merchant", "merchant_id", "mode", "status", "created_at"),
    Index("ix_payment_exceptions_session", "session_id"),
    Index(
        "ix_payment_exceptions_requested",
        "requested_at",
        postgresql_where=text("requested_action IS NOT NULL AND status = 'open'"),
    ),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("mode", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("enabled_events", ARRAY(Text), nullable=False),
    Column("secret", Text, nullable=False, comment="whsec_…; needed in clear to sign"),
    Column("previous_secret", Text),
    Column("previous_secret_expires_at", DateTime(timezone=True)),
    _created(),
    Column("disabled_at", DateTime(timezone=True)),
    Column("deleted_at", DateTime(timezone=True)),
    Column("description", Text, comment="the merchant's own label"),
    Column(
        "disabled_reason",
        Text,
        comment="why disabled_at is set: the merchant, or the endpoint answered 410",
    ),
    Index("ix_webhook_endpoints_merchant", "merchant_id", "mode"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("endpoint_id", Text, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False, comment="the exact body that is signed"),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    _created(),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_attempt_at", DateTime(timezone=True)),
    UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_once"),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at", "id"),
)
ignored_transfers = Table(
    "ignored_transfers",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("network", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("tx_hash", Text, nullable=False),
    Column("log_index", Integer, nullable=False),
    Column("session_id", Text, ForeignKey("checkout_sessions.id"), nullable=False),
    Column("token", Text, nullable=False),
    Column("from_address", Text, nullable=False),
    Column("amount_raw", Units, nullable=False, comment="base units of token"),
    Column("decimals", SmallInteger, nullable=False),
    Column("stage", Text, nullable=False, comment="the stage first seen"),
    Column("reason", Text, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    _created(),
    UniqueConstraint("network", "tx_hash", "log_index", name="uq_ignored_transfers_identity"),
    Index("ix_ignored_transfers_session", "session_id"),
    comment="transfers that moved no session (dust below the minimum credit); audit only",
)

chain_progress = Table(
    "chain_progress",
    metadata,
    Column("network", Text, primary_key=True),
    Column("mode", Text, primary_key=True),
    Column("partition", Integer, primary_key=True, comment="of chain.transfers"),
    Column("partitions", Integer, nullable=False, comment="the topic's count per the marker"),
    Column("block_number", BigInteger, nullable=False),
    Column("block_hash", Text, nullable=False),
    Column("block_time", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    comment="greatest ChainScanned marker consumed per partition (same transaction as transfers)",
)


outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="publish order"),
    Column("shard", SmallInteger, nullable=False, comment="crc32(key) % 64; one relay per shard"),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", LargeBinary, comment="NULL is a tombstone (compacted topics)"),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _created(),
    comment="events waiting for the broker's ack; a row is deleted once acknowledged",
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("merchant_id", Text, primary_key=True),
    Column("mode", Text, primary_key=True),
    Column(
        "sub_merchant_id",
        Text,
        primary_key=True,
        server_default=text("''"),
        comment="'' when the key was used without X-Sub-Merchant-Code",
    ),
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False, comment="sha256 of method, path, body"),
    Column("status_code", Integer, comment="NULL while claimed"),
    Column("content_type", Text),
    Column("body", LargeBinary, comment="the response as replayed (webhook secrets redacted)"),
    _created(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_idempotency_records_expires", "expires_at"),
    comment="the durable half of Idempotency-Key; written in the transaction of its work",
)

exchange_rates = Table(
    "exchange_rates",
    metadata,
    Column("base", Text, primary_key=True, comment="fiat ISO code"),
    Column("quote", Text, primary_key=True, comment="token symbol"),
    Column("source", Text, primary_key=True),
    Column("rate", Numeric(30, 8), nullable=False, comment="fiat units per 1 token"),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
)

aml_cache = Table(
    "aml_cache",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("network", Text, primary_key=True),
    Column("address", Text, primary_key=True),
    Column("verdict", Text, nullable=False),
    Column("flags", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


# --- card checkout sessions (issue 13) --------------------------------------------------------

card_sessions = Table(
    "card_sessions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("mode", Text, nullable=False),
    Column("client_id", Text, nullable=False, comment="the OAuth client that created it"),
    Column("order_reference", Text, nullable=False),
    Column("status", Text, nullable=False, comment="CardSessionStatus"),
    Column(
        "status_rank",
        SmallInteger,
        nullable=False,
        server_default=text("0"),
        comment="cards.domain.STATUS_RANK of status: a session only moves to a higher rank",
    ),
    Column("currency", Text, nullable=False, comment="ISO 4217 alphabetic"),
    Column("exponent", SmallInteger, nullable=False, comment="ISO 4217 minor-unit digits"),
    Column("total", BigInteger, nullable=False, comment="minor units of currency"),
    Column("shipping", BigInteger, nullable=False, comment="minor units of currency"),
    Column("tax", BigInteger, nullable=False, comment="minor units of currency"),
    Column("billing_country", Text, nullable=False, comment="ISO 3166-1 alpha-2"),
    Column("order_data", JSONB, nullable=False, comment="the validated order, money as strings"),
    Column("success_url", Text, nullable=False),
    Column("failure_url", Text, nullable=False),
    Column("provider", Text, comment="the live attempt's provider; NULL until one is created"),
    Column("provider_reference", Text),
    Column("checkout_url", Text),
    Column("live_seq", SmallInteger, comment="card_attempts.seq of the live attempt"),
    Column("score", Numeric(4, 1), comment="the live provider's routing score, 0-100"),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column(
        "reconcile_at",
        DateTime(timezone=True),
        comment="when the reconciliation pass next asks the live provider; NULL: not yet"
        " asked (due at created_at + the first delay)",
    ),
    _created(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_card_sessions_list", "merchant_id", "mode", "created_at"),
    Index(
        "ix_card_sessions_expiring",
        "expires_at",
        postgresql_where=text("status = 'PENDING'"),
    ),
    comment="card checkout sessions (POST /api/v1/sessions)",
)

card_attempts = Table(
    "card_attempts",
    metadata,
    Column("session_id", UUID(as_uuid=False), ForeignKey("card_sessions.id"), primary_key=True),
    Column("seq", SmallInteger, primary_key=True, comment="1, 2, … in routing order"),
    Column("provider", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False, comment="sent to the provider"),
    Column(
        "status",
        Text,
        nullable=False,
        comment="creating|created|failed|timed_out|rejected|superseded|orphan_expired",
    ),
    Column("reference", Text, comment="the provider's checkout id"),
    Column("checkout_url", Text),
    Column("error", Text),
    Column("latency_ms", Integer),
    _created(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index(
        "uq_card_attempts_reference",
        "provider",
        "reference",
        unique=True,
        postgresql_where=text("reference IS NOT NULL"),
    ),
    Index(
        "ix_card_attempts_unsettled",
        "created_at",
        postgresql_where=text("status IN ('creating', 'timed_out')"),
    ),
    comment="each provider create call, recorded (committed) before the call is made",
)

card_routing_decisions = Table(
    "card_routing_decisions",
    metadata,
    Column("session_id", UUID(as_uuid=False), ForeignKey("card_sessions.id"), primary_key=True),
    Column("ranked", JSONB, nullable=False, comment="candidates best first; scores as strings"),
    Column("rejected", JSONB, nullable=False),
    Column("rule", Text),
    _created(),
)

card_webhook_inbox = Table(
    "card_webhook_inbox",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("provider_event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("session_id", UUID(as_uuid=False), comment="NULL when no attempt matched"),
    Column("outcome", Text),
    Column("payload_sha256", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="verified provider webhooks, deduplicated on (provider, provider_event_id)",
)


card_route_stats = Table(
    "card_route_stats",
    metadata,
    Column("currency", Text, primary_key=True, comment="ISO 4217 alphabetic"),
    Column("country", Text, primary_key=True, comment="billing ISO 3166-1 alpha-2"),
    Column("provider", Text, primary_key=True),
    Column(
        "window_start",
        DateTime(timezone=True),
        primary_key=True,
        comment="the hour (UTC, truncated) the counts happened in",
    ),
    Column(
        "attempts",
        BigInteger,
        nullable=False,
        server_default=text("0"),
        comment="provider checkouts created (payers sent to the provider)",
    ),
    Column("completed", BigInteger, nullable=False, server_default=text("0")),
    Column(
        "failed",
        BigInteger,
        nullable=False,
        server_default=text("0"),
        comment="declined or expired at the provider",
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_card_route_stats_window", "window_start"),
    comment="what routing's conversion component learns from: one row per route and hour",
)

card_routing_rules = Table(
    "card_routing_rules",
    metadata,
    Column("merchant_id", Text, ForeignKey("merchants.id"), primary_key=True),
    Column("mode", Text, primary_key=True),
    Column("pin", Text, comment="always this provider when it can take the order"),
    Column(
        "exclude",
        ARRAY(Text),
        nullable=False,
        server_default=text("'{}'"),
        comment="providers never tried",
    ),
    Column("split", JSONB, comment='{"stripe": 70, "paypal": 30}: whole percents summing to 100'),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("mode IN ('test', 'live')", name="ck_card_routing_rules_mode"),
    CheckConstraint(
        "pin IS NULL OR NOT (pin = ANY (exclude))", name="ck_card_routing_rules_pin_not_excluded"
    ),
    comment="a merchant's say in card routing, per mode (pago-admin card-rules)",
)
