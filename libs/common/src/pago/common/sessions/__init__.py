"""What every service says about a checkout session: the API's session object, built once."""

from pago.common.sessions.snapshot import build_session_snapshot, chain_family, checkout_url

__all__ = ["build_session_snapshot", "chain_family", "checkout_url"]
