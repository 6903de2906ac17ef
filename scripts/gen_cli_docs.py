"""Write docs/cli.md, the command reference, from the typer app itself, so
the reference cannot drift from ``--help`` (tests/unit/test_cli_docs.py
fails when docs/cli.md is not what this script writes).

    python scripts/gen_cli_docs.py           # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import typer

from backupctl.cli.app import app

OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """# Command reference

Generated from the CLI by `scripts/gen_cli_docs.py`; do not edit by hand
(`tests/unit/test_cli_docs.py` checks it is current). The same text is in
`backupctl COMMAND --help`.

Defaults: a command's store may be left out when `BACKUPCTL_STORE` or the
config file names one, and `--target` defaults to `BACKUPCTL_TARGET`; see
[Defaults](#defaults) at the end.
"""

FOOTER = """## Defaults

Precedence, highest first: the command line, then the environment, then the
config file.

| setting | environment | config file key |
|---|---|---|
| the store (`STORE`, `SRC` of `copy`, `--to` is not defaulted) | `BACKUPCTL_STORE` | `store` |
| `--target` | `BACKUPCTL_TARGET` | `target` |
| `--endpoint` | `BACKUPCTL_ENDPOINT` | `endpoint` |
| `--limit-upload` (KiB/s) | `BACKUPCTL_LIMIT_UPLOAD` | `limit-upload` (a number) |
| `--limit-download` (KiB/s) | `BACKUPCTL_LIMIT_DOWNLOAD` | `limit-download` (a number) |
| `--part-size` | `BACKUPCTL_PART_SIZE` | `part-size` (`"64MiB"`) |
| `--concurrency` | `BACKUPCTL_CONCURRENCY` | `concurrency` (1 to 32) |

The config file is `$BACKUPCTL_CONFIG`, else `$XDG_CONFIG_HOME/backupctl/config.toml`,
else `~/.config/backupctl/config.toml`; a TOML file such as

```toml
store = "s3://backups/redis"
target = "prod/cache"
```

A missing default config file is fine; a missing `$BACKUPCTL_CONFIG` file, an
unknown key or a value of the wrong kind is one `error:` line and exit 2. The
transfer settings apply to the commands that have the option
([stores.md](stores.md#large-transfers-bandwidth-part-size-concurrency)).
Commands whose positionals are `STORE ID` (`verify`, `restore`, `show`, `ls`,
`delete`) tell the store from an id by its shape: an argument that is a backup
id (`backup-YYYYMMDD-HHMMSS[-N]`) or `latest` starts the ids.
"""


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _metavar(p: Any) -> str:
    if p.metavar:
        return str(p.metavar)
    return str(getattr(getattr(p, "type", None), "name", "value")).upper()


def _param_row(p: Any) -> str:
    if p.param_type_name == "argument":
        name = f"`{p.metavar or p.name.upper()}`"
        return f"| {name} | {_cell(getattr(p, 'help', ''))} |"
    names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    if not p.is_flag:
        names += f" `{_metavar(p)}`"
    default = ""
    if (
        p.default not in (None, False, (), [])
        and not callable(p.default)
        and p.show_default is not False
    ):
        default = f" (default: `{p.default}`)"
    return f"| {names} | {_cell(p.help)}{default} |"


def render() -> str:
    group = typer.main.get_command(app)
    ctx = typer.Context(group, info_name="backupctl")
    parts = [HEADER, f"{_cell(group.help)}\n", "## Commands\n"]
    commands = group.commands  # type: ignore[attr-defined]
    for name, cmd in commands.items():
        parts.append(f"- [`{name}`](#{name}): {_cell((cmd.help or '').split(chr(10) * 2)[0])}")
    parts.append("")
    for name, cmd in commands.items():
        sub = typer.Context(cmd, info_name=name, parent=ctx)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        parts.append(f"## {name}\n")
        parts.append(f"```\nbackupctl {name} {usage}\n```\n")
        parts.append(inspect.cleandoc(cmd.help or "") + "\n")
        params = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name != "help"]
        if params:
            parts.append("| argument / option | meaning |\n|---|---|")
            parts.extend(_param_row(p) for p in params)
            parts.append("")
    parts.append(FOOTER)
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if argv[:1] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write("docs/cli.md is stale: run python scripts/gen_cli_docs.py\n")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
