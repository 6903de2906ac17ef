"""What gets installed: the tested dependency versions (constraints.txt), the
kopf floor, and the image's base.

- constraints.txt pins a version of every requirement of backupctl and its test
  extras, each inside pyproject.toml's range, and the venv the suite runs in has
  exactly those versions (so "tested with" is true);
- pyproject.toml's kopf floor refuses every kopf without what the controller
  uses at startup (``settings.watching.label_selectors``: kopf 1.45);
- scripts/bootstrap.sh and the Dockerfile install with the constraints, and
  every base image of the Dockerfile is pinned by digest.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import kopf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements() -> list[Requirement]:
    project = pyproject()["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(r) for r in reqs]


def constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
        key = canonicalize_name(name)
        assert key not in pins, f"constraints.txt: {name} pinned twice"
        pins[key] = Version(version)
    return pins


def test_every_requirement_is_pinned_within_its_range() -> None:
    pins = constraints()
    for req in requirements():
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"constraints.txt has no pin for {req.name}"
        assert req.specifier.contains(pin, prereleases=True), f"{req.name}=={pin} is not {req}"


def test_the_venv_runs_the_pinned_versions() -> None:
    """The suite runs with what constraints.txt says (bootstrap installs with it):
    a pin that differs from the venv is not a tested version."""
    differ = []
    for name, pin in constraints().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            differ.append(f"{name}: pinned {pin}, not installed")
            continue
        if installed != pin:
            differ.append(f"{name}: pinned {pin}, installed {installed}")
    assert differ == [], "run scripts/bootstrap.sh, or regenerate constraints.txt:\n" + "\n".join(
        differ
    )


def test_kopf_floor_has_what_the_controller_uses() -> None:
    (req,) = [r for r in requirements() if r.name == "kopf"]
    # settings.watching.label_selectors arrived in kopf 1.45.0 (1.44.6 lacks it).
    assert not req.specifier.contains("1.44.6")
    assert req.specifier.contains("1.45.0")
    assert hasattr(kopf.OperatorSettings().watching, "label_selectors")


def test_bootstrap_and_image_install_with_the_constraints() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert re.search(r'pip install -q -c constraints\.txt -e "\.\[', bootstrap)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*constraints\.txt", dockerfile, re.M)
    assert re.search(r"pip install --no-cache-dir -c constraints\.txt \.", dockerfile)
    assert "constraints.txt" not in (ROOT / ".dockerignore").read_text()


def test_every_base_image_is_pinned_by_digest() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert any(f.startswith("python:3.11-slim-bookworm@") for f in froms)
    for image in froms:
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image} is not pinned by digest"
