"""What every service says about a checkout session: the API's session object, built once."""

from pago.common.sessions.snapshot import (
    SessionTemplate,
    build_session_snapshot,
    chain_family,
    checkout_url,
    session_template,
    transaction_snapshot,
)

__all__ = [
    "SessionTemplate",
    "build_session_snapshot",
    "chain_family",
    "checkout_url",
    "session_template",
    "transaction_snapshot",
]
