from pago.watcher.main import main

main()
