"""The hosted checkout page (``GET /checkout/{id}``) and its live status stream (SSE)."""
