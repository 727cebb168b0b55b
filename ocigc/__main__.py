from ocigc.cli import main

main()
