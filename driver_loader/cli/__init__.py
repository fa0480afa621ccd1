"""The command line: subcommands, the legacy and falcoctl translation, the config file, exit codes."""
