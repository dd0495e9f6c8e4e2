from ser.cli import main

main()
