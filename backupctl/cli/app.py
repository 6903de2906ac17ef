"""The ``backupctl`` command line: the typer app, its commands (one module
per command group in this package) and :func:`main`.

Every command exits 0 only on success. Errors a user can cause end in one
line on stderr (``error: ...``) and exit code 1; usage errors exit 2 (typer).
Set ``BACKUPCTL_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import sys

import typer

from backupctl import __version__
from backupctl.cli import defaults, listing, live, operator, prune, restore, run, verify
from backupctl.cli.check import check_command
from backupctl.cli.copy import copy_command
from backupctl.cli.delete import delete_command
from backupctl.cli.ls import ls
from backupctl.cli.show import show

app = typer.Typer(
    name="backupctl",
    help="Back up and restore Redis to file, S3, Azure Blob or GCS; run the Kubernetes controller.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> None:
    """Print the version."""
    typer.echo(__version__)


# In this order in --help.
app.command("run")(run.run)
app.command("list")(listing.list_cmd)
app.command("verify")(verify.verify)
app.command("restore")(restore.restore)
app.command("check-redis")(live.check_redis)
app.command("quiesce-redis")(live.quiesce_redis)
app.command("version")(version)
app.command("operator")(operator.operator_command)
app.command("prune")(prune.prune_command)
app.command("show")(show)
app.command("ls")(ls)
app.command("delete")(delete_command)
app.command("check")(check_command)
app.command("copy")(copy_command)


def _bound_malloc_caching() -> None:
    """Have glibc mmap (and give back) every allocation of 256 KiB or more.

    The data path allocates MiB-sized chunks on several threads; by default
    glibc raises its mmap threshold after the first free and keeps such
    chunks in per-thread arenas, which measured ~10 MiB of extra peak RSS on
    an S3 upload. No-op where glibc is not the allocator."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main() -> None:
    _bound_malloc_caching()
    args, default_map = defaults.for_main(sys.argv[1:], _value_options())
    app(args=args, default_map=default_map)


def _value_options() -> dict[str, set[str]]:
    """Per command, its options that take a value (see :func:`defaults.insert_store`)."""
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    return {
        name: {o for p in cmd.params if not getattr(p, "is_flag", True) for o in p.opts}
        for name, cmd in commands.items()
        if name in defaults.STORE_THEN_ID
    }
