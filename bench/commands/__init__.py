"""One module per `sixn` subcommand, named after it; each provides add_arguments(parser) and run(args)."""
