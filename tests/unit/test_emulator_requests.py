"""The API emulator's cheaper request path (issue 15) keeps what tests rely on.

The emulator makes kmock's ``Request`` for the log only when the log is read, shares the
stored spec between versions on a status write, serialises a written object once for its
answer and its watch events, and wakes a watch stream once per batch. Each test here is what
a test author (or a controller) would notice if one of those went wrong.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import kmock
import pytest

from support.kube.api_client import ApiStatusError
from support.kube.fixtures import K8sApi

NS = "emu"
GROUP = "example.dev"
PLURAL = "gadgets"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "default": 1},
                                    "parts": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {
                                            "type": "object",
                                            "required": ["name"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "count": {"type": "integer"},
                                            },
                                            "x-kubernetes-validations": [
                                                {
                                                    "rule": "self.count >= oldSelf.count",
                                                    "message": "count may not decrease",
                                                }
                                            ],
                                        },
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string", "enum": ["Ready", "Failed"]},
                                    "seen": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.create(CRD)
    k8s_api.create_namespace(NS)
    k8s_api.wait_for(lambda: _served(k8s_api), timeout=10, message="the CRD served")
    return k8s_api


def _served(api: K8sApi) -> bool:
    try:
        api.request("GET", f"/apis/{GROUP}/v1/namespaces/{NS}/{PLURAL}")
    except ApiStatusError:
        return False
    return True


def gadget(name: str, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"parts": parts or [{"name": "a", "count": 1}]}
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": spec}


def path(name: str = "", sub: str = "") -> str:
    base = f"/apis/{GROUP}/v1/namespaces/{NS}/{PLURAL}"
    return "/".join(p for p in (base, name, sub) if p)


def merge(api: K8sApi, url: str, body: dict[str, Any]) -> Any:
    return api.request("PATCH", url, body, content_type="application/merge-patch+json")


def test_the_request_log_shows_each_request_parsed_and_the_same_object_on_every_read(
    api: K8sApi,
) -> None:
    api.request("POST", path(), gadget("g1"))
    merge(api, path("g1", "status"), {"status": {"phase": "Ready"}})

    def log() -> list[kmock.Request]:
        return [r for r in api.emulator.requests if r.resource and r.resource.plural == PLURAL]

    first, second = api.call(log), api.call(log)
    assert [(r.method, r.action, r.name, r.subresource) for r in first[-2:]] == [
        (kmock.method.POST, kmock.action.CREATE, None, None),
        (kmock.method.PATCH, kmock.action.UPDATE, "g1", "status"),
    ]
    assert first[-2].data["metadata"]["name"] == "g1"
    assert first[-1].data == {"status": {"phase": "Ready"}}
    assert first[-1].url.path == path("g1", "status")
    assert all(a is b for a, b in zip(first, second, strict=True))  # kmock compares by identity
    # kmock's own filtered views read the same log.
    posts = api.call(lambda: list(api.emulator["post", kmock.resource(GROUP, "v1", PLURAL)]))
    assert len(posts) == 1 and posts[0] is first[-2]


def test_a_fault_injected_with_the_dsl_answers_and_is_logged_as_the_request_it_saw(
    api: K8sApi,
) -> None:
    reaction = api.call(lambda: api.emulator["post", kmock.resource(GROUP, "v1", PLURAL)] << 503)
    with pytest.raises(ApiStatusError) as refused:
        api.request("POST", path(), gadget("g2"))
    assert refused.value.status == 503
    assert api.get(f"{GROUP}/v1/{PLURAL}", NS, "g2") is None
    seen = api.call(lambda: list(reaction))
    logged = api.call(lambda: [r for r in api.emulator.requests if r.method == "POST"])
    assert len(seen) == 1 and any(r is seen[0] for r in logged)


def test_a_status_write_changes_only_the_status_and_leaves_the_stored_version_before_it(
    api: K8sApi,
) -> None:
    created = api.request("POST", path(), gadget("g3"))
    assert created["spec"]["size"] == 1  # defaulted on create
    with pytest.raises(ApiStatusError) as bad:
        merge(api, path("g3", "status"), {"status": {"phase": "Lost"}})
    assert bad.value.status == 422 and "status.phase" in bad.value.message
    with pytest.raises(ApiStatusError) as bad_time:
        merge(api, path("g3", "status"), {"status": {"seen": "yesterday"}})
    assert bad_time.value.status == 422 and "date-time" in bad_time.value.message

    patched = merge(api, path("g3", "status"), {"status": {"phase": "Ready"}, "spec": {"size": 9}})
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"] == created["spec"]  # a status write ignores the spec
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]

    def versions() -> list[dict[str, Any]]:
        obj = api.emulator.objects[kmock.resource(GROUP, "v1", PLURAL), NS, "g3"]
        return [v.raw for v in obj.history if v is not None]

    before, after = api.call(versions)[-2:]
    assert "status" not in before and after["status"] == {"phase": "Ready"}
    assert before["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_a_transition_rule_on_a_map_list_item_sees_the_old_item_of_the_same_key(
    api: K8sApi,
) -> None:
    api.request(
        "POST", path(), gadget("g4", [{"name": "a", "count": 5}, {"name": "b", "count": 1}])
    )
    # Reordered, b grown, a unchanged: each item is compared with the old item of its key.
    merge(
        api, path("g4"), {"spec": {"parts": [{"name": "b", "count": 2}, {"name": "a", "count": 5}]}}
    )
    with pytest.raises(ApiStatusError) as refused:
        merge(
            api,
            path("g4"),
            {"spec": {"parts": [{"name": "b", "count": 2}, {"name": "a", "count": 4}]}},
        )
    assert refused.value.status == 422
    assert "spec.parts[1]: Invalid value" in refused.value.message
    assert "count may not decrease" in refused.value.message
    # A new key has no old item: its transition rule does not run.
    merge(api, path("g4"), {"spec": {"parts": [{"name": "c", "count": 0}]}})


def test_a_watch_sends_each_write_as_the_write_answered_it_and_ends_on_its_timeout(
    api: K8sApi,
) -> None:
    start = api.request("GET", path())["metadata"]["resourceVersion"]
    host, port = api.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path() + f"?watch=true&resourceVersion={start}&timeoutSeconds=2")
    response = conn.getresponse()
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in response))
    reader.start()
    answers = [api.request("POST", path(), gadget("g5"))]
    answers.append(merge(api, path("g5", "status"), {"status": {"phase": "Failed"}}))
    started = time.monotonic()
    reader.join(10)
    assert not reader.is_alive() and time.monotonic() - started < 3  # the stream ended
    conn.close()
    assert [e["type"] for e in lines] == ["ADDED", "MODIFIED"]
    assert [e["object"] for e in lines] == answers
