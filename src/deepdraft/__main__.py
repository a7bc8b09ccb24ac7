from deepdraft.cli import main

main()
