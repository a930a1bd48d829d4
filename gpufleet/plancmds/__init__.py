"""One module per ``gpufleet plan`` subcommand: ``add_parser(p_sub, add_db)`` and ``run(args)``."""
