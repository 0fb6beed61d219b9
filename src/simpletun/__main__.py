from simpletun.cli import main

main()
