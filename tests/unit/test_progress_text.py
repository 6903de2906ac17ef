"""What a progress line and the text beside the terminal's bar say (pure):
binary units, a label for every step, the keys of a load (issue 17)."""

from __future__ import annotations

import pytest

from backupctl.cli.progress import Meter, State, describe, fields

MiB = 1 << 20


@pytest.mark.parametrize(
    ("state", "text"),
    [
        (State("waiting for BGSAVE", 0, None, 8.2), "waiting for BGSAVE: 8s"),
        (
            State("upload", 12 * MiB, 48 * MiB, 4.0),
            "upload: 12.0 MiB of 48.0 MiB (25%), 3.0 MiB/s, ETA 12s, 4s",
        ),
        (State("upload", 3 * MiB, None, 1.0), "upload: 3.0 MiB, 3.0 MiB/s, 1s"),
        (
            State("load", 100 * MiB, 200 * MiB, 50.0, keys=16384),
            "load: 100.0 MiB of 200.0 MiB (50%), 16,384 keys, 2.0 MiB/s, ETA 50s, 50s",
        ),
        # a total passed (a store that grew): never over 100%
        (State("download", 11, 10, 1.0), "download: 11 B of 10 B (100%), 11 B/s, 1s"),
        (State("verify", 10, 0, 1.0), "verify: 10 B of 0 B (100%), 10 B/s, 1s"),
        (
            State("prune", 3, 7, 90.0, unit="backups"),
            "prune: 3 backups of 7 backups (42%), 0 backups/s, ETA 2m00s, 1m30s",
        ),
    ],
)
def test_describe(state: State, text: str) -> None:
    assert describe(state) == text


def test_json_fields_name_the_keys_of_a_load_only_when_known() -> None:
    plain = fields(State("upload", 5, 10, 1.0))
    assert plain == {"event": "progress", "step": "upload", "unit": "bytes", "bytes": 5,
                     "total": 10, "rate": 5.0, "eta": 1.0, "elapsed": 1.0}  # fmt: skip
    assert fields(State("load", 5, 10, 1.0, keys=3))["keys"] == 3
    # no rate (nor ETA) over a blink: it would be noise
    assert fields(State("load", 5, 10, 0.2))["rate"] is None


def test_a_load_is_its_own_step_started_by_its_first_report() -> None:
    now = [0.0]
    meter = Meter("download", clock=lambda: now[0])
    seen: list[tuple[str, bool]] = []
    meter.on_change = lambda state, new_step: seen.append((describe(state), new_step))
    meter.set_total(100)
    meter.advance(100)
    now[0] = 10.0
    meter.load(1024, 40, 80)
    now[0] = 12.0
    meter.load(2048, 80, 80)
    assert seen[-2:] == [
        ("load: 40 B of 80 B (50%), 1,024 keys, 0s", True),
        ("load: 80 B of 80 B (100%), 2,048 keys, 40 B/s, ETA 0s, 2s", False),
    ]
    meter.step("swap")  # a new step forgets the keys
    assert meter.state().keys is None
