from kdlang.cli import main

main()
