"""What the CLI's subcommands do, as functions a script can call."""
