"""``backupctl operator``: run the Kubernetes controller (RedisBackup and
RedisRestore) in this process, with the options turned into its Config."""

from __future__ import annotations

import os
import socket
import sys
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
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Handle only RedisBackups/RedisRestores labelled backupctl.dev/shard=NAME; "
        "--shard '' handles those without the label (default: all of them). See docs/ha.md.",
    ),
]
LeaderElectOpt = Annotated[
    bool,
    typer.Option(
        "--leader-elect/--no-leader-elect",
        help="Handle resources only while holding the (shard's) Lease, so several replicas "
        "can run: one leads, the others wait. Identity: $POD_NAME.",
    ),
]
LeaseNamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--leader-elect-namespace",
        help="Namespace of the Lease (default: $POD_NAMESPACE, else the first --namespace).",
    ),
]
LeaseDurationOpt = Annotated[
    float,
    typer.Option(
        "--leader-elect-lease-duration",
        help="Seconds a standby waits after the last renewal it saw before taking the Lease "
        "(the worst-case failover time after a crash).",
    ),
]
RenewDeadlineOpt = Annotated[
    float,
    typer.Option(
        "--leader-elect-renew-deadline",
        help="Seconds the leader keeps trying to renew before it stops handling and exits 1 "
        "(shorter than the lease duration).",
    ),
]
RetryPeriodOpt = Annotated[
    float,
    typer.Option(
        "--leader-elect-retry-period",
        help="Seconds between attempts to acquire or renew the Lease.",
    ),
]


def operator_command(
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    liveness: LivenessOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_address: MetricsAddressOpt = "0.0.0.0",
    image: ImageOpt = None,
    verbose: VerboseOpt = False,
    shard: ShardOpt = None,
    leader_elect: LeaderElectOpt = False,
    leader_elect_namespace: LeaseNamespaceOpt = None,
    leader_elect_lease_duration: LeaseDurationOpt = 15.0,
    leader_elect_renew_deadline: RenewDeadlineOpt = 10.0,
    leader_elect_retry_period: RetryPeriodOpt = 2.0,
) -> None:
    """Run the Kubernetes controller for RedisBackup (and RedisRestore) resources."""
    if bool(namespace) == all_namespaces:
        fail("pass --namespace NS (repeatable) or --all-namespaces")
    # Imported here: kopf and the API client are only needed by this command.
    from backupctl.controller import leader_rules

    if shard is not None and (problem := leader_rules.shard_problem(shard)):
        fail(problem)
    timings = leader_rules.Timings(
        leader_elect_lease_duration, leader_elect_renew_deadline, leader_elect_retry_period
    )
    if leader_elect and (problem := timings.problem()):
        fail(f"--leader-elect-*: {problem}")
    election_where = election_place(leader_elect, leader_elect_namespace, namespace or [])
    if isinstance(election_where, str):
        fail(election_where)
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
    keep_out_kubernetes_client()
    # Imported here: kopf and the API client are only needed by this command.
    from backupctl.controller import login

    # Before kopf starts: there, a login that fails is a startup handler retried forever.
    try:
        login.connection_info()
    except login.LoginError as e:
        fail(str(e))
    except Exception as e:  # a kubeconfig that cannot be read or has no such context
        fail(f"cannot log in to Kubernetes: {type(e).__name__}: {e}")
    from backupctl.controller import app as operator

    config = operator.Config(
        image=image or os.environ.get(operator.IMAGE_ENV) or operator.DEFAULT_IMAGE,
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        shard=shard,
        election=None
        if election_where is None
        else operator.Election(
            identity=election_where[0], namespace=election_where[1], timings=timings
        ),
    )
    operator.run(
        namespaces=namespace or [],
        all_namespaces=all_namespaces,
        liveness=liveness,
        config=config,
        verbose=verbose,
    )


def keep_out_kubernetes_client() -> None:
    """Stop this process from importing the ``kubernetes`` package, where it is installed.

    kopf imports its client, when it can, only to recognise its model objects, which
    the controllers never pass; loading its models costs each controller process
    ~30 MiB. The controllers log in and talk to the API without it
    (:mod:`backupctl.controller.login`, :mod:`backupctl.controller.kube`). Left alone
    when something imported it already (the package is not a dependency of backupctl;
    a development install has it for the tests)."""
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]


def election_place(
    leader_elect: bool, lease_namespace: str | None, namespaces: list[str]
) -> tuple[str, str] | str | None:
    """(identity, Lease namespace) for ``--leader-elect`` (None: not electing), or what
    is missing: the identity is ``$POD_NAME`` (the downward API; else this host's name)."""
    if not leader_elect:
        return None
    identity = os.environ.get("POD_NAME") or socket.gethostname()
    where = lease_namespace or os.environ.get("POD_NAMESPACE") or (namespaces[:1] or [""])[0]
    if not where:
        return (
            "--leader-elect: no namespace for the Lease; pass --leader-elect-namespace NS "
            "or set $POD_NAMESPACE (the manifests set it from the downward API)"
        )
    return identity, where


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
