"""``python -m pago.matcher``: the same as the ``pago-matcher`` script."""

from pago.matcher.main import main

main()
