from deepdraft.cli.app import main

main()
