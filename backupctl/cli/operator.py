"""``backupctl operator``: run the Kubernetes controller (RedisBackup and
RedisRestore) in this process, with the options turned into its Config."""

from __future__ import annotations

import os
import socket
from typing import Annotated
from urllib.parse import urlsplit

import typer

from backupctl.cli.output import fail

NamespaceOpt = Annotated[
    list[str] | None,
    typer.Option("--namespace", "-n", help="Watch this namespace (repeat for several)."),
]
AllNamespacesOpt = Annotated[
    bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace.")
]
LivenessOpt = Annotated[
    str | None,
    typer.Option(
        "--liveness",
        help="Serve a health check at this URL; its host is the address listened on: "
        "http://127.0.0.1:8080/healthz for this machine only, http://0.0.0.0:8080/healthz "
        "in a pod (the kubelet probes the pod IP).",
    ),
]
MetricsPortOpt = Annotated[
    int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on this port.")
]
MetricsAddressOpt = Annotated[
    str,
    typer.Option(
        "--metrics-address",
        help="Address --metrics-port listens on (0.0.0.0: every address, as Prometheus "
        "scrapes the pod IP; 127.0.0.1: this machine only).",
    ),
]
ImageOpt = Annotated[
    str | None,
    typer.Option("--image", help="Image of the Jobs (default: $BACKUPCTL_IMAGE)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Debug logging.")]


def operator_command(
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    liveness: LivenessOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_address: MetricsAddressOpt = "0.0.0.0",
    image: ImageOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the Kubernetes controller for RedisBackup (and RedisRestore) resources."""
    if bool(namespace) == all_namespaces:
        fail("pass --namespace NS (repeatable) or --all-namespaces")
    listens = []
    if liveness is not None:
        host_port = liveness_listen(liveness)
        if isinstance(host_port, str):
            fail(host_port)
        listens.append((*host_port, "--liveness"))
    if metrics_port is not None:
        listens.append((metrics_address, metrics_port, "--metrics-address/--metrics-port"))
    for host, port, flags in listens:
        problem = cannot_listen(host, port)
        if problem:
            fail(f"cannot listen on {host}:{port} ({flags}): {problem}")
    # Imported here: kopf and the API client are only needed by this command.
    from backupctl.controller import app as operator

    config = operator.Config(
        image=image or os.environ.get(operator.IMAGE_ENV) or operator.DEFAULT_IMAGE,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
    )
    operator.run(
        namespaces=namespace or [],
        all_namespaces=all_namespaces,
        liveness=liveness,
        config=config,
        verbose=verbose,
    )


def liveness_listen(url: str) -> tuple[str, int] | str:
    """The (address, port) the ``--liveness`` URL listens on, or what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"--liveness {url!r}: {e}; expected e.g. http://0.0.0.0:8080/healthz"
    if parts.scheme != "http" or not parts.hostname or port is None:
        return f"--liveness {url!r}: expected http://ADDRESS:PORT/PATH, e.g. http://0.0.0.0:8080/healthz"
    return parts.hostname, port


def cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` (None: it can): checked before
    kopf starts, so a wrong address is one line, not a retried startup handler."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        return f"{e}; use 0.0.0.0 (every address), 127.0.0.1 or the pod's IP"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            return f"{e.strerror or e}; use 0.0.0.0 (every address) or an address of this machine"
    return None
