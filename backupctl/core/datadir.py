"""Names inside a Redis data directory that the restore steps and the
RedisRestore controller's Jobs agree on (pure constants)."""

STAGING_PREFIX = ".backupctl-staging-"
PREVIOUS_PREFIX = ".backupctl-previous-"
