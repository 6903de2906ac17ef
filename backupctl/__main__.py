"""``python -m backupctl`` runs the CLI."""

from backupctl.cli import main

main()
