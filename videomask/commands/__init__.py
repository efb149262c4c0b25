"""One module per ``videomask`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""
