"""The front page and docs/ stay true as the code moves (issue 17):

- every ``backupctl`` command line shown in README.md and docs/ (sh blocks)
  names a command that exists and only options that command has, so a reader
  who pastes it gets the command, not a usage error;
- every relative link in README.md and docs/*.md points at a file that exists,
  and, into a Markdown file, at a heading it has (GitHub's anchors).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from backupctl.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _commands(text: str) -> list[str]:
    """The ``backupctl ...`` command lines of the sh blocks (continuations joined)."""
    found = []
    for block in SH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0]
            for part in re.split(r"&&|\|\||;|\|", line):
                words = part.split()
                if "backupctl" in words:
                    found.append(" ".join(words[words.index("backupctl") :]))
    return found


def _options(command: Any) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


SHOWN = [(page.relative_to(ROOT).as_posix(), cmd) for page in PAGES
         for cmd in _commands(page.read_text())]  # fmt: skip


def test_the_pages_show_commands_at_all() -> None:
    pages = {page for page, _ in SHOWN}
    assert {"README.md", "docs/restore.md", "docs/operations.md"} <= pages


@pytest.mark.parametrize(("page", "line"), SHOWN)
def test_every_command_shown_exists_with_its_options(page: str, line: str) -> None:
    group = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(group, "commands")  # noqa: B009 (typer's own click)
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
    name = words[1]
    if name.startswith("-"):  # backupctl --version
        assert name in _options(group) | {"--version"}, (page, line)
        return
    command = commands.get(name)
    assert command is not None, f"{page}: no command {name!r} in: {line}"
    options = _options(command)
    for word in words[2:]:
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and not re.fullmatch(r"-\d+", flag):
            assert flag in options, f"{page}: backupctl {name} has no {flag}: {line}"


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


LINKS = [(page, target) for page in PAGES for target in LINK.findall(page.read_text())
         if not re.match(r"[a-z]+:", target)]  # fmt: skip


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.name}: {target} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{page.name}: no heading #{anchor} in {dest.name}"
