"""``python -m pago.notifier``: the same as ``pago-notifier``."""

from pago.notifier.main import main

main()
