"""Subcommands of the ``qaccel`` CLI (see ``qaccel.cli.COMMAND_MODULES``)."""
