"""backupctl: backup and restore for Redis on Kubernetes (controller + CLI)."""

__version__ = "0.1.0"
