"""``backupctl operator``'s listen flags: a wrong health or metrics address is one
clear line (exit 1) before kopf starts, not a startup handler kopf retries."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from backupctl.cli.operator import cannot_listen, liveness_listen

from support.cli_runner import assert_one_clear_error, cli


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://0.0.0.0:8080/healthz", ("0.0.0.0", 8080)),
        ("http://127.0.0.1:18080/healthz", ("127.0.0.1", 18080)),
        ("http://[::1]:8080/healthz", ("::1", 8080)),
    ],
)
def test_liveness_url_names_the_address_and_port(url: str, expected: tuple[str, int]) -> None:
    assert liveness_listen(url) == expected


@pytest.mark.parametrize(
    "url", ["0.0.0.0:8080", "https://0.0.0.0:8080/healthz", "http://0.0.0.0/healthz", "http://:1/"]
)
def test_liveness_url_without_address_or_port_is_refused(url: str) -> None:
    problem = liveness_listen(url)
    assert isinstance(problem, str) and "http://0.0.0.0:8080/healthz" in problem


def test_an_address_of_this_machine_can_be_listened_on() -> None:
    assert cannot_listen("127.0.0.1", 0) is None
    assert cannot_listen("0.0.0.0", 0) is None


def test_a_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert "in use" in (cannot_listen("127.0.0.1", port) or "")


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--metrics-port", "9", "--metrics-address", "192.0.2.1"], ["192.0.2.1:9", "0.0.0.0"]),
        (["--metrics-port", "9", "--metrics-address", "no-such-host.invalid"], ["no-such-host"]),
        (["--liveness", "http://0.0.0.0/healthz"], ["--liveness", "PORT"]),
    ],
)
def test_operator_refuses_an_address_it_cannot_listen_on(
    flags: list[str], needles: list[str]
) -> None:
    proc = cli("operator", "--namespace", "ns", *flags, check=False, timeout=60)
    assert_one_clear_error(proc, *needles)


@pytest.mark.skipif(
    Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists(),
    reason="this machine has a service account to log in with",
)
def test_operator_without_a_login_is_one_clear_error(tmp_path: Path) -> None:
    """No kubeconfig and no service account: one line that says how to give one, before
    kopf starts (there it was a startup handler that failed and was retried forever)."""
    nothing = {"KUBECONFIG": "", "HOME": str(tmp_path)}
    proc = cli("operator", "--namespace", "ns", env=nothing, check=False, timeout=60)
    assert_one_clear_error(proc, "no Kubernetes login", "KUBECONFIG", "service account")
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    proc = cli(
        "operator", "--namespace", "ns", env={**nothing, "KUBECONFIG": str(broken)}, check=False,
        timeout=60,
    )  # fmt: skip
    assert_one_clear_error(proc, "cannot log in to Kubernetes", "context")
