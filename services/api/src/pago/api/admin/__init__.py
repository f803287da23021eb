"""``pago-admin``: merchants, sub-merchants, API keys, fees, xpubs and address pools."""
