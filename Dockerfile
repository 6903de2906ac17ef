# One image for the controller (`backupctl operator`) and for the Jobs it
# creates (`backupctl run`, `prune`, `restore`).
#   docker build -t backupctl:0.1.0 .

# The newest supported Redis, for its redis-server and redis-check-rdb.
# Why: bookworm's redis-tools is Redis 7.0.15, whose redis-check-rdb reads RDB
# 10 at most and calls every snapshot of Redis 7.2+ (RDB 11/12) corrupt, and
# whose redis-server cannot read them for `restore --to-redis`. backupctl
# checks every RDB with its own reader (backupctl/redis/rdb_reader.py) and asks
# redis-check-rdb only when it reads that version (backupctl/core/compat.py),
# so an older tool costs only the second opinion; this one gives it for every
# Redis 7.0-8.x snapshot and Valkey 8's (REDIS0011), not for Valkey 9's
# VALKEY080. The official image is Debian bookworm, like the base below, so
# its binary finds the same glibc and OpenSSL. Pinned by digest (the
# multi-arch index of redis:8.0.2), so a rebuild gets the same bytes; the suite
# runs Redis 8.0.2 (see tests/datapath/test_version_matrix.py).
FROM redis:8.0.2@sha256:b43d2dcbbdb1f9e1582e3a0f37e53bf79038522ccffb56a25858969d7a9b6c11 AS redis

# Pinned by digest (the multi-arch index of python:3.11-slim-bookworm when it
# was Python 3.11.16, September 2026), so a rebuild gets the same base. To move
# to a newer base: `docker buildx imagetools inspect python:3.11-slim-bookworm`
# and replace the digest (docs/install.md, "Versions").
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# tzdata: schedules in any IANA time zone. No redis-tools: see above.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

# redis-check-rdb is redis-server under another name (argv[0] picks the mode),
# as in the official image. `--version` fails the build if a library is missing.
COPY --from=redis /usr/local/bin/redis-server /usr/local/bin/redis-server
RUN ln -s redis-server /usr/local/bin/redis-check-rdb \
    && redis-server --version \
    && redis-check-rdb --version

# The uid the manifests expect (runAsUser: 10001). Restore Jobs may run as the
# Redis pod's uid instead, so nothing in the image depends on this one.
RUN groupadd --gid 10001 backupctl \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin backupctl

WORKDIR /src
# constraints.txt: the dependency versions the suite passed with.
COPY pyproject.toml README.md constraints.txt ./
COPY backupctl ./backupctl
RUN pip install --no-cache-dir -c constraints.txt . \
    && rm -rf /src

WORKDIR /
# Root filesystem is read-only in the pods: /tmp is an emptyDir.
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["backupctl"]
CMD ["--help"]
