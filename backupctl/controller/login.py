"""Who the controller is to the API server: one login for kopf's watches and our client.

``$KUBECONFIG`` when set; else, in a pod, its service account; else ``~/.kube/config``.
kopf asks :func:`login` (its ``@kopf.on.login`` handler in ``app.py``) and the
controllers' own client (:mod:`backupctl.controller.kube`) asks
:func:`connection_info`, so both speak to the same server as the same user.

Not the ``kubernetes`` package's loaders: importing them loads its whole client (every
API model, ~30 MiB in each controller process, and a shard holds 2,500 RedisBackups in
under 200 MiB). kopf's kubeconfig loader is used as it is; the service-account login is
our own because it takes the server from ``$KUBERNETES_SERVICE_HOST`` and
``$KUBERNETES_SERVICE_PORT`` as client-go's in-cluster config does (kopf's assumes the
cluster DNS name) and re-reads the projected token, which the kubelet rotates, each
time it is asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf

#: Where the kubelet mounts a pod's service-account token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class LoginError(Exception):
    """No way to log in: no kubeconfig and no service account."""


def in_cluster_server(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The API server's URL inside a pod, as client-go's in-cluster config finds it."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "") or "443"
    if not host:
        return "https://kubernetes.default.svc"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"https://{host}:{port}"


def login_with_service_account(
    directory: Path = SERVICE_ACCOUNT_DIR,
    environ: dict[str, str] | os._Environ[str] = os.environ,
    trust_env: bool = False,
) -> kopf.ConnectionInfo | None:
    """The pod's service account (None outside a pod); ``trust_env``: take proxies from
    the environment (kopf's ``settings.networking.trust_env``)."""
    try:
        token = (directory / "token").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    ca = directory / "ca.crt"
    try:
        namespace = (directory / "namespace").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        namespace = ""
    return kopf.ConnectionInfo(
        server=in_cluster_server(environ),
        ca_path=str(ca) if ca.exists() else None,
        token=token or None,
        default_namespace=namespace or None,
        trust_env=trust_env,
    )


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """``$KUBECONFIG`` when set, else the pod's service account, else ``~/.kube/config``
    (kopf's handler signature: ``settings`` and the rest as keywords)."""
    settings: kopf.OperatorSettings = kwargs.setdefault("settings", kopf.OperatorSettings())
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    in_pod = login_with_service_account(
        SERVICE_ACCOUNT_DIR, trust_env=settings.networking.trust_env
    )
    return in_pod or kopf.login_with_kubeconfig(**kwargs)


def connection_info() -> kopf.ConnectionInfo:
    """:func:`login`, or :class:`LoginError` saying what is missing."""
    info = login()
    if info is None:
        raise LoginError(
            "no Kubernetes login: set $KUBECONFIG, write ~/.kube/config, or run in a pod "
            f"with a service account token ({SERVICE_ACCOUNT_DIR}/token)"
        )
    return info
