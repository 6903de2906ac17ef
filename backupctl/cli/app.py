"""The ``backupctl`` command line: the typer app, its commands (one module
per command group in this package) and :func:`main`.

Every command exits 0 only on success. A failure ends in one line on stderr
(``error: ...``) and the exit code of :mod:`backupctl.cli.exit_codes` (the
table is in docs/cli-output.md); usage errors too, also those click finds
(:class:`BackupctlGroup`), with exit code 2. Set ``BACKUPCTL_DEBUG=1`` to see
tracebacks.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer._click import exceptions as click_errors  # typer 0.29 vendors click
from typer._click.core import Command as ClickCommand
from typer._click.core import Context as ClickContext
from typer._click.core import Parameter
from typer.core import TyperGroup

from backupctl import __version__
from backupctl.cli import defaults, listing, live, operator, prune, restore, run, verify
from backupctl.cli.check import check_command
from backupctl.cli.copy import copy_command
from backupctl.cli.delete import delete_command
from backupctl.cli.exit_codes import ExitCode
from backupctl.cli.help_layout import apply_help_layout, quiet_help_option
from backupctl.cli.ls import ls
from backupctl.cli.output import error_json, print_json
from backupctl.cli.show import show
from backupctl.core.compat import SUPPORTED, display
from backupctl.core.malloc import tune_malloc

#: -h everywhere (restic, kubectl); wide enough that option help is not squeezed.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class BackupctlGroup(TyperGroup):
    """The root command: click's usage errors become one ``error:`` line
    (with ``--json`` also the JSON error on stdout) and exit code 2, instead
    of a multi-line box; Ctrl-C before a command's own handler is 130. Its
    commands' options get their metavars and panels from
    :mod:`backupctl.cli.help_layout`."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        quiet_help_option(self)
        for name, command in self.commands.items():
            apply_help_layout(name, command.params)
            quiet_help_option(command)

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        params = super().get_params(ctx)  # typer adds the completion flags here
        apply_help_layout("", params)
        return params

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help() if e.ctx else self.get_help(ClickContext(self)))
            sys.exit(0)
        except click_errors.UsageError as e:
            sys.exit(_usage_error(e, as_json="--json" in argv))
        except click_errors.ClickException as e:  # e.g. a file option that cannot be opened
            typer.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except (typer.Abort, KeyboardInterrupt, EOFError):
            typer.echo("error: interrupted", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        sys.exit(code if isinstance(code, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _usage_error(e: click_errors.UsageError, *, as_json: bool) -> int:
    """Print a usage error in one line with where to look next; its exit code."""
    message = _one_line(e.format_message())
    if e.ctx is not None:
        message += f" (see '{e.ctx.command_path} --help')"
    if as_json:
        print_json(error_json(message, ExitCode.USAGE))
    typer.echo(f"error: {message}", err=True)
    return int(ExitCode.USAGE)


app = typer.Typer(
    name="backupctl",
    cls=BackupctlGroup,
    help="Back up and restore Redis and Valkey to file, S3, Azure Blob or GCS; run the "
    "Kubernetes controller.\n\n"
    "Examples:\n\n"
    "  backupctl run --redis redis://127.0.0.1:6379 --to s3://bucket/backups\n\n"
    "  backupctl list s3://bucket/backups\n\n"
    "  backupctl restore s3://bucket/backups latest --to-dir /var/lib/redis\n\n"
    "Exit codes: 0 ok, 1 error, 2 usage, 3 Redis, 4 store, 5 not found, 6 integrity, "
    "7 refused as unsafe, 130/143 interrupted (docs/cli-output.md).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
    rich_markup_mode="rich",
)


def supported_versions() -> dict[str, Any]:
    """The version and which servers this build supports (``--version --json``)."""
    return {
        "ok": True,
        "version": __version__,
        "supported": [
            {"flavour": flavour, "from": ".".join(map(str, low)), "to": f"{high[0]}.x"}
            for flavour, low, high in SUPPORTED
        ],
    }


def _print_version(as_json: bool) -> None:
    if as_json:
        print_json(supported_versions())
        return
    servers = ", ".join(
        f"{display(f, '.'.join(map(str, low)))} to {high[0]}.x" for f, low, high in SUPPORTED
    )
    typer.echo(f"backupctl {__version__} (supports {servers})")


VersionOpt = Annotated[
    bool, typer.Option("--version", help="Print the version and the supported Redis/Valkey.")
]
RootJsonOpt = Annotated[bool, typer.Option("--json", help="With --version: print JSON.")]


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context, show_version: VersionOpt = False, as_json: RootJsonOpt = False
) -> None:
    if show_version:
        _print_version(as_json)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def version(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print the version and the supported Redis / Valkey versions."""
    _print_version(as_json)


# In this order in --help.
app.command("run", context_settings=CONTEXT)(run.run)
app.command("list", context_settings=CONTEXT)(listing.list_cmd)
app.command("verify", context_settings=CONTEXT)(verify.verify)
app.command("restore", context_settings=CONTEXT)(restore.restore)
app.command("check-redis", context_settings=CONTEXT)(live.check_redis)
app.command("quiesce-redis", context_settings=CONTEXT)(live.quiesce_redis)
app.command("version", context_settings=CONTEXT)(version)
app.command("operator", context_settings=CONTEXT)(operator.operator_command)
app.command("prune", context_settings=CONTEXT)(prune.prune_command)
app.command("show", context_settings=CONTEXT)(show)
app.command("ls", context_settings=CONTEXT)(ls)
app.command("delete", context_settings=CONTEXT)(delete_command)
app.command("check", context_settings=CONTEXT)(check_command)
app.command("copy", context_settings=CONTEXT)(copy_command)


def _bound_malloc_caching() -> None:
    """Have glibc mmap (and give back) every allocation of 256 KiB or more.

    The data path allocates MiB-sized chunks on several threads; by default
    glibc raises its mmap threshold after the first free and keeps such
    chunks in per-thread arenas, which measured ~10 MiB of extra peak RSS on
    an S3 upload. No-op where glibc is not the allocator."""
    tune_malloc(mmap_threshold=256 * 1024)


def main() -> NoReturn:
    _bound_malloc_caching()
    # Built once (``app(...)`` would build every command's click parameters
    # again: ~0.1 CPU-s of each run's start-up).
    group = typer.main.get_command(app)
    args, default_map = defaults.for_main(sys.argv[1:], _value_options(group))
    code: object = 0
    try:
        group(args=args, default_map=default_map)
    except SystemExit as e:
        code = e.code
    leave(code)


def leave(code: object) -> NoReturn:
    """Exit as ``sys.exit(code)`` does, without tearing the interpreter down.

    After the command is done, a normal exit frees every module's objects one
    by one: 0.2-0.9 s for what a run loads (botocore's service models, typer,
    redis-py), measured after the last byte of every S3 backup -- time a
    user and a Job wait for nothing. What an exit must do is still done
    here, in the same order: wait for non-daemon threads, run the atexit
    handlers (logging, temporary folders' finalizers), flush stdout and
    stderr; then the process ends with ``os._exit``."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: as Python's own exit, status 120
            status = status or 120
    os._exit(status)


def _value_options(group: ClickCommand) -> dict[str, set[str]]:
    """Per command, its options that take a value (see :func:`defaults.insert_store`)."""
    commands = getattr(group, "commands", {})
    return {
        name: {o for p in cmd.params if not getattr(p, "is_flag", True) for o in p.opts}
        for name, cmd in commands.items()
        if name in defaults.STORE_THEN_ID
    }
