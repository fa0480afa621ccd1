from driver_loader.cli import main

main()
