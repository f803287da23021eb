"""The matcher: screens senders, applies chain transfers to checkout sessions, expires them."""
