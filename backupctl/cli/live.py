"""``backupctl check-redis`` and ``backupctl quiesce-redis``: what a restore
asks of running Redis servers (the restore controller runs them as Jobs,
which hold the Redis password; anyone may run them by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli.logs import LogFormatOpt, QuietOpt, VerboseOpt
from backupctl.cli.options import JsonOpt, PasswordFileOpt, TermLogOpt, redis_spec
from backupctl.cli.output import CommandResult, report, user_errors
from backupctl.core.compat import display
from backupctl.redis.live import NodeState, check_nodes, quiesce, restored_keys, resume

RedisUrlsOpt = Annotated[
    list[str],
    typer.Option(
        "--redis",
        help="redis://[user:pass@]host:port of a server (repeat for each one). Password also "
        "from --password-file or REDIS_PASSWORD.",
        show_default=False,
    ),
]
ExpectKeysOpt = Annotated[
    int | None,
    typer.Option(
        "--expect-keys",
        min=0,
        help="Verify a restore: each primary loaded exactly N keys at its last start and "
        "every replica holds the same data (DEBUG DIGEST where allowed).",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option("--wait", min=0, help="Seconds to wait for servers to start, load, sync, agree."),
]
RedisUrlOpt = Annotated[
    str,
    typer.Option("--redis", help="redis://[user:pass@]host:port", show_default=False),
]
StateFileOpt = Annotated[
    Path,
    typer.Option(
        "--state-file",
        help="Where the original settings are kept (a rerun reuses it; --resume reads it).",
        show_default=False,
    ),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Set back what an earlier run changed.")]


@dataclass(frozen=True)
class Checked(CommandResult):
    nodes: list[NodeState]
    verified: bool  # --expect-keys was given

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "nodes": [{"name": n.redis, **n.json()} for n in self.nodes],
            "restoredKeys": restored_keys(self.nodes) if self.verified else None,
        }

    def termination_fallbacks(self) -> tuple[dict[str, Any], ...]:
        # Without digests when it would not fit into a termination message.
        nodes = [{"name": n.redis, **n.json(), "digest": None} for n in self.nodes]
        return ({**self.to_json(), "nodes": nodes},)

    def print_text(self) -> None:
        for n in self.nodes:
            typer.echo(
                f"{n.redis}: {display(n.flavour, n.server_version or n.version)} {n.role}, "
                f"{n.keys} keys" + (f", loaded {n.loaded}" if n.loaded is not None else "")
            )


@dataclass(frozen=True)
class Quiesced(CommandResult):
    redis: str
    resumed: bool
    original: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "redis": self.redis, "resumed": self.resumed, "original": self.original}

    def print_text(self) -> None:
        what = "resumed" if self.resumed else "quiesced"
        typer.echo(f"{what} {self.redis} ({', '.join(sorted(self.original)) or 'nothing'})")


def check_redis(
    redis_urls: RedisUrlsOpt,
    expect_keys: ExpectKeysOpt = None,
    wait: WaitOpt = 0.0,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
    termination_log: TermLogOpt = None,
) -> None:
    """Report version, role, keys and load counters of Redis servers; verify a restore."""
    with user_errors(termination_log):
        specs = [redis_spec(u, password_file) for u in redis_urls]
        nodes = check_nodes(specs, expect_keys=expect_keys, wait=wait)
        result = Checked(nodes, verified=expect_keys is not None)
        report(result, as_json=as_json, termination_log=termination_log)


def quiesce_redis(
    redis_url: RedisUrlOpt,
    state_file: StateFileOpt,
    resume_: ResumeOpt = False,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
    termination_log: TermLogOpt = None,
) -> None:
    """Stop a running Redis from writing to its data directory, or --resume it.

    Sets save "", appendonly no, repl-diskless-sync yes and replica-priority 0, so files
    restored underneath it survive its shutdown; the original values go to --state-file."""
    with user_errors(termination_log):
        spec = redis_spec(redis_url, password_file)
        settings = resume(spec, state_file) if resume_ else quiesce(spec, state_file)
        result = Quiesced(spec.display, resumed=resume_, original=settings)
        report(result, as_json=as_json, termination_log=termination_log)
