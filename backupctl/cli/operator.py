"""``backupctl operator``: run the Kubernetes controller (RedisBackup and
RedisRestore) in this process, with the options turned into its Config."""

from __future__ import annotations

import os
from typing import Annotated

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
    typer.Option("--liveness", help="Serve a health check, e.g. http://0.0.0.0:8080/healthz."),
]
MetricsPortOpt = Annotated[
    int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on this port.")
]
MetricsAddressOpt = Annotated[
    str, typer.Option("--metrics-address", help="Address for --metrics-port.", hidden=True)
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
