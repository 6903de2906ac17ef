"""``python -m backupctl`` runs the CLI."""

from backupctl.cli.app import main

main()
