# One image for the controller (`backupctl operator`) and for the Jobs it
# creates (`backupctl run`, `prune`, `restore`).
#   docker build -t backupctl:0.1.0 .
FROM python:3.11-slim-bookworm

# redis-tools: redis-check-rdb / redis-check-aof to check archives;
# tzdata: schedules in any IANA time zone.
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-tools tzdata \
    && rm -rf /var/lib/apt/lists/*

# The uid the manifests expect (runAsUser: 10001). Restore Jobs may run as the
# Redis pod's uid instead, so nothing in the image depends on this one.
RUN groupadd --gid 10001 backupctl \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin backupctl

WORKDIR /src
COPY pyproject.toml README.md ./
COPY backupctl ./backupctl
RUN pip install --no-cache-dir . \
    && rm -rf /src

WORKDIR /
# Root filesystem is read-only in the pods: /tmp is an emptyDir.
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["backupctl"]
CMD ["--help"]
