"""The ``backupctl`` command line (typer only): :mod:`~backupctl.cli.app`
registers one module per command group; :mod:`~backupctl.cli.output` is the
one error / ``--json`` / termination-log path they all end in."""
