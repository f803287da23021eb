"""Card provider adapters behind one protocol (``base.CardProviderAdapter``)."""
