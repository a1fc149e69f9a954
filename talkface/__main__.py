from talkface.cli import main

main()
