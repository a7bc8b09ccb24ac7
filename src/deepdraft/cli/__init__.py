"""The `deepdraft` command line: `app` holds the root command; one module per command group."""
