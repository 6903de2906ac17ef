"""How ``--help`` looks: metavars that say what a value is (URL, PATH,
SECONDS, N) instead of typer's ``<str>``/``<bool>``, and options grouped in
panels (restore alone has more than 20).

Why a module of its own: the commands declare what an option does; this one
table decides how all of them are shown, so the help reads the same in every
command (applied once to the built click commands by
:func:`apply_help_layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from typer._click.core import Command, Context, Parameter  # typer 0.29 vendors click
from typer.core import TyperArgument, TyperOption

#: Options whose value is a URL (the rest get a metavar from their type).
URL_OPTIONS = frozenset(
    {"--to", "--redis", "--to-redis", "--to-cluster", "--sentinel", "--endpoint"}
)
#: Metavars by option where the type says too little.
METAVARS = {
    "--level": "N",
    "--expect-keys": "N",
    "--shard": "I/N",
    "--id": "ID",
    "--compression": "zstd|gzip|none",
    "--method": "bgsave|replication",
    "--appendonly": "auto|yes|no",
    "--redis-server": "PATH",
    "--log-format": "text|json",
}
OUTPUT = "Output"
STORE = "Store"
#: Panels by command, then option; options not named stay in "Options".
PANELS: dict[str, dict[str, str]] = {
    "restore": {
        "--to-dir": "Destination (pick one)",
        "--to-redis": "Destination (pick one)",
        "--to-cluster": "Destination (pick one)",
        "--appendonly": "With --to-dir",
        "--prefer-aof": "With --to-dir",
        "--stage-only": "With --to-dir",
        "--swap": "With --to-dir",
        "--discard-staged": "With --to-dir",
        "--force": "With --to-dir",
        "--redis-server": "With --to-dir",
        "--node": "With --to-dir",
        "--flush": "With --to-redis",
        "--tmp-dir": "With --to-redis",
        "--password-file": "With --to-redis",
        "--restart": "With --to-cluster",
        "--verify-only": "With --to-cluster",
        "--timeout": "With --to-cluster",
        "--dry-run": OUTPUT,
    },
    "run": {
        "--cluster": "Cluster and Sentinel",
        "--prefer-replica": "Cluster and Sentinel",
        "--require-replica": "Cluster and Sentinel",
        "--sentinel": "Cluster and Sentinel",
        "--master-name": "Cluster and Sentinel",
        "--sentinel-password-file": "Cluster and Sentinel",
        "--shard": "Cluster and Sentinel",
        "--id": "Cluster and Sentinel",
        "--owner": "Cluster and Sentinel",
        "--method": "Snapshot",
        "--pause-rdbcompression": "Snapshot",
        "--compression": "Snapshot",
        "--level": "Snapshot",
        "--data-dir": "Snapshot",
        "--timeout": "Snapshot",
    },
    "prune": {
        "--keep-last": "Policy",
        "--keep-hourly": "Policy",
        "--keep-daily": "Policy",
        "--keep-weekly": "Policy",
        "--keep-monthly": "Policy",
        "--keep-yearly": "Policy",
        "--keep-within": "Policy",
        "--timezone": "Policy",
        "--incomplete-grace": "Policy",
        "--dry-run": OUTPUT,
    },
}
#: In every command.
COMMON_PANELS = {
    "--json": OUTPUT,
    "--termination-log": OUTPUT,
    "--quiet": OUTPUT,
    "--verbose": OUTPUT,
    "--log-format": OUTPUT,
    "--endpoint": STORE,
    "--target": STORE,
}


def metavar(option: TyperOption) -> str:
    """What ``--help`` shows after an option ("" for a flag)."""
    name = option.opts[0]
    if option.is_flag:
        return ""
    if name in URL_OPTIONS:
        return "URL"
    if name in METAVARS:
        return METAVARS[name]
    annotation = option.type_descriptor.annotation
    if annotation is Path or name.endswith(("-file", "-dir", "-log")):
        return "PATH"
    if annotation is float:
        return "SECONDS"
    if annotation is int:
        return "N"
    return name.lstrip("-").split("-")[-1].upper()


#: Argument metavars by parameter name.
ARGUMENTS = {"store_url": "STORE", "backup": "ID"}


def apply_help_layout(command_name: str, params: Sequence[Parameter]) -> None:
    """Set the metavar and panel of every parameter of one command (in place)."""
    panels = {**COMMON_PANELS, **PANELS.get(command_name, {})}
    for argument in params:
        if isinstance(argument, TyperArgument):
            if argument.metavar is None:
                argument.metavar = ARGUMENTS.get(argument.name or "", (argument.name or "").upper())
            # The name column shows the metavar already; typer would add "<str>".
            argument.display_type_rich = _no_type  # type: ignore[method-assign]
    for option in (p for p in params if isinstance(p, TyperOption)):
        if option.metavar is None:
            option.metavar = metavar(option)
        if option.rich_help_panel is None and option.opts[0] in panels:
            option.rich_help_panel = panels[option.opts[0]]


def _no_type(ctx: Context) -> None:
    return None


def quiet_help_option(command: Command) -> None:
    """``--help`` (added by click per command, outside ``params``) shows no
    ``<bool>``: wrap the command's factory of it (in place)."""
    make = command.get_help_option

    def get_help_option(ctx: Context) -> TyperOption | None:
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option  # type: ignore[method-assign]
