"""OAuth 2.0 client credentials and JWT verification for the card API."""
