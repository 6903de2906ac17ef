"""Who data Jobs run as, and when a pod that does not start fails its step (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backupctl.controller.identity import RunAs, effective_run_as, probe_owner
from backupctl.controller.job_limits import first_seen, stuck, stuck_message
from backupctl.controller.jobs import JobView, PodProblem
from backupctl.controller.manifests import TargetPod
from backupctl.controller.observe import pod_problem
from backupctl.controller.topology import TargetError, check_bgsave_claim

T0 = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
CREATING = PodProblem("ContainerCreating", "", since=T0, hard=False)


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "expected"),
    [
        ({}, {}, RunAs()),
        ({"runAsUser": 1000, "runAsGroup": 1000}, {}, RunAs(1000, 1000)),
        # Bitnami: the user at container level wins over the pod's
        ({"runAsUser": 1000, "fsGroup": 1001}, {"runAsUser": 1001}, RunAs(1001, None, 1001)),
        ({"runAsGroup": 5}, {"runAsUser": 999}, RunAs(999, 5)),
        ({"supplementalGroups": [7, 8], "fsGroup": 9}, {}, RunAs(None, None, 9, (7, 8))),
        ({"runAsUser": "999"}, {}, RunAs()),  # not an integer: unknown, probed
    ],
)
def test_the_effective_user_is_the_containers_over_the_pods(
    pod_sc: dict[str, Any], container_sc: dict[str, Any], expected: RunAs
) -> None:
    container = {"name": "redis", "securityContext": container_sc}
    pod = {"spec": {"securityContext": pod_sc, "containers": [container]}}
    assert effective_run_as(pod, container) == expected
    assert RunAs.from_status(expected.to_status()) == expected


def test_the_volume_owner_fills_only_what_the_manifests_leave_open() -> None:
    assert RunAs(fs_group=3).with_owner(999, 999) == RunAs(999, 999, 3)
    assert RunAs(1000).with_owner(999, 998) == RunAs(1000, 998)
    assert probe_owner({"ok": True, "uid": 999, "gid": 999}) == (999, 999)
    assert probe_owner({"ok": False, "error": "x"}) is None
    assert probe_owner({"ok": True}) is None


def _pod(status: dict[str, Any], created: str = "2030-01-01T02:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": "job-abcde", "creationTimestamp": created}, "status": status}


UNSCHEDULABLE = {
    "phase": "Pending",
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/2 nodes are available: 1 node(s) were unschedulable",
            "lastTransitionTime": "2030-01-01T02:00:03Z",
        }
    ],
}
SCHEDULED = [{"type": "PodScheduled", "status": "True"}]


@pytest.mark.parametrize(
    ("status", "reason", "hard", "since"),
    [
        (UNSCHEDULABLE, "Unschedulable", True, T0 + timedelta(seconds=3)),
        (
            {"phase": "Pending", "containerStatuses": [
                {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
            ]},
            "ImagePullBackOff", True, T0,
        ),
        (
            {"phase": "Pending", "containerStatuses": [
                {"state": {"waiting": {"reason": "ContainerCreating"}}}
            ]},
            "ContainerCreating", False, T0,
        ),
        ({"phase": "Pending", "conditions": SCHEDULED}, "ContainerCreating", False, T0),
        ({"phase": "Pending"}, None, False, None),  # not scheduled yet, no reason given
        ({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]},
         None, False, None),
    ],
)  # fmt: skip
def test_pod_problem_says_why_and_since_when(
    status: dict[str, Any], reason: str | None, hard: bool, since: datetime | None
) -> None:
    problem = pod_problem([_pod(status)], on_clock=lambda t: t)
    if reason is None:
        assert problem is None
        return
    assert problem is not None
    assert (problem.reason, problem.hard, problem.since, problem.pod) == (
        reason, hard, since, "job-abcde"
    )  # fmt: skip
    if reason == "ContainerCreating":
        assert "kubectl describe pod job-abcde" in problem.message


def test_pod_problem_maps_the_api_servers_times_onto_the_controllers_clock() -> None:
    shift = timedelta(days=3)
    problem = pod_problem([_pod(UNSCHEDULABLE)], on_clock=lambda t: t + shift)
    assert problem is not None and problem.since == T0 + timedelta(seconds=3) + shift


@pytest.mark.parametrize(
    ("view", "after", "is_stuck"),
    [
        (JobView("j", "Running", waiting=PodProblem("Unschedulable", "m", since=T0)), 299, False),
        (JobView("j", "Running", waiting=PodProblem("Unschedulable", "m", since=T0)), 300, True),
        (JobView("j", "Running", waiting=CREATING), 301, True),
        # no time on the problem: the Job's start counts
        (JobView("j", "Running", started=T0, waiting=PodProblem("ErrImagePull", "m")), 301, True),
        (JobView("j", "Running", waiting=PodProblem("ErrImagePull", "m")), 9999, False),
        (JobView("j", "Running", ready=True, waiting=PodProblem("X", "m", since=T0)), 999, False),
        (JobView("j", "Failed", waiting=PodProblem("X", "m", since=T0)), 999, False),
        (JobView("j", "Running"), 999, False),
    ],
)
def test_a_pod_is_stuck_only_after_the_grace(view: JobView, after: int, is_stuck: bool) -> None:
    assert (stuck(view, T0 + timedelta(seconds=after), 300) is not None) is is_stuck


def test_the_stuck_message_names_the_job_the_pod_and_the_pods_own_words() -> None:
    problem = PodProblem("Unschedulable", "1 node(s) were unschedulable", since=T0, pod="j-x")
    text = stuck_message(JobView("j", "Running", waiting=problem), problem, 300)
    assert text == "Job j (pod j-x) could not start within 300 s: Unschedulable: 1 node(s) were " \
        "unschedulable"  # fmt: skip


def test_bgsave_is_refused_on_a_read_write_once_pod_claim() -> None:
    pod = TargetPod(name="redis-0", host="h", node_name="n", data_pvc="data-redis-0")
    rwo = {"spec": {"accessModes": ["ReadWriteOnce"]}}
    assert check_bgsave_claim(pod, rwo) is pod and check_bgsave_claim(pod, None) is pod
    with pytest.raises(TargetError, match=r"ReadWriteOncePod.*method: replication") as e:
        check_bgsave_claim(pod, {"spec": {"accessModes": ["ReadWriteOncePod"]}})
    assert e.value.reason == "ReadWriteOncePod"


def test_a_pod_waits_from_when_the_controller_first_saw_it_on_its_own_clock() -> None:
    seen: dict[str, datetime] = {}
    # A clock moved forward (days after the pod's timestamps): the first sighting counts.
    later = T0 + timedelta(days=2)
    problem = first_seen(PodProblem("Unschedulable", "m", since=later), "j", later, seen)
    assert problem is not None and problem.since == later
    again = first_seen(PodProblem("Unschedulable", "m", since=later + timedelta(minutes=9)), "j",
                       later + timedelta(minutes=9), seen)  # fmt: skip
    assert again is not None and again.since == later
    # On a real clock the pod's own (earlier) time counts.
    early = first_seen(PodProblem("X", "m", since=T0), "k", T0 + timedelta(minutes=3), seen)
    assert early is not None and early.since == T0
    assert first_seen(None, "j", later, seen) is None and "j" not in seen
