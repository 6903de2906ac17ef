"""``backupctl operator`` on a test clock: the real controller, started with
:class:`support.kube.fake_clock.FileOffsetClock`.

    PYTHONPATH=tests python -m support.kube.run_operator -n NS [--image I]
        [--metrics-port P] [--metrics-address A] [--liveness URL] [--verbose]
        [--shard NAME] [--leader-elect [--leader-elect-namespace NS]
        [--leader-elect-lease-duration S] [--leader-elect-renew-deadline S]
        [--leader-elect-retry-period S]] --clock-offset-file F

The flags are those of ``backupctl operator`` (parsed into the same
:class:`backupctl.controller.app.Config`) plus ``--clock-offset-file``;
:func:`support.kube.operator_process.operator_command` builds the command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backupctl.cli.operator import election_place, keep_out_kubernetes_client

keep_out_kubernetes_client()  # as `backupctl operator` does, before kopf is imported

from backupctl.controller import app  # noqa: E402
from backupctl.controller.leader_rules import Timings  # noqa: E402

from support.kube.fake_clock import FileOffsetClock  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="run_operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[])
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    parser.add_argument("--image")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--metrics-address", default=app.Config.metrics_address)
    parser.add_argument("--liveness")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--shard")
    parser.add_argument("--leader-elect", action="store_true")
    parser.add_argument("--leader-elect-namespace")
    parser.add_argument("--leader-elect-lease-duration", type=float, default=15.0)
    parser.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    parser.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    parser.add_argument("--clock-offset-file", type=Path, required=True)
    args = parser.parse_args(argv)
    if bool(args.namespace) == args.all_namespaces:
        parser.error("pass --namespace NS (repeatable) or --all-namespaces")
    config = app.Config.from_env()
    if args.image:
        config.image = args.image
    config.metrics_port = args.metrics_port
    config.metrics_address = args.metrics_address
    config.shard = args.shard
    if args.leader_elect:
        timings = Timings(
            args.leader_elect_lease_duration,
            args.leader_elect_renew_deadline,
            args.leader_elect_retry_period,
        )
        if problem := timings.problem():
            parser.error(problem)
        place = election_place(True, args.leader_elect_namespace, args.namespace)
        if not isinstance(place, tuple):
            parser.error(str(place))
        config.election = app.Election(identity=place[0], namespace=place[1], timings=timings)
    app.run(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        liveness=args.liveness,
        config=config,
        verbose=args.verbose,
        clock=FileOffsetClock(args.clock_offset_file),
    )


if __name__ == "__main__":
    main()
