from driver_loader.cli.main import main

main()
