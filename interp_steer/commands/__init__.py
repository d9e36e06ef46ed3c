"""Command-line subcommands, one module each (``add_parser(sub)`` + ``cmd_<name>(args)``), wired into
:mod:`interp_steer.cli`."""
