"""Discovery documents (``/api``, ``/apis``, ``/apis/G``, ``/apis/G/V``, ``/version``).

Why: kubectl, kopf and the ``kubernetes`` client find resources through discovery before any
request, and kmock's documents break them (its core group says ``groupVersion: "/v1"``, so
kubectl finds no core resources). These are rendered from the :class:`~.resources.ResourceRegistry`,
so a CRD's resources appear as soon as it is stored and vanish when it goes; the storage
version is a group's preferred version.
"""

from __future__ import annotations

import kmock

from .errors import JsonDict
from .resources import ResourceRegistry

SERVER_VERSION: JsonDict = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-emulated",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class Discovery:
    """The discovery documents of what the registry serves."""

    def __init__(self, types: ResourceRegistry) -> None:
        self.types = types

    def resources(self) -> list[kmock.resource]:
        """Every served group/version/plural (kmock's scaffold lists them at ``GET /``)."""
        return [kmock.resource(t.group, t.version, t.plural) for t in self.types]

    @staticmethod
    def api_versions() -> JsonDict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }

    def group_list(self) -> JsonDict:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group_doc(g, v) for g, v in self._groups().items()],
        }

    def group(self, group: str) -> JsonDict | None:
        """The APIGroup document, or None for a group that is not served."""
        groups = self._groups()
        if group not in groups:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, groups[group])}

    def version(self, group: str, version: str | None) -> JsonDict | None:
        """The APIResourceList of a group version (subresources included), or None."""
        types = [t for t in self.types if t.group == group and t.version == version]
        if not types:
            return None
        resources = []
        for t in sorted(types, key=lambda t: t.plural):
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.singular,
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": t.verbs,
                    "shortNames": t.short_names,
                    "categories": t.categories,
                }
            )
            for sub in sorted(t.subresources):
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": "Scale" if sub == "scale" else t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    @staticmethod
    def server_version() -> JsonDict:
        return dict(SERVER_VERSION)

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for t in self.types:
            if t.group and t.version not in groups.setdefault(t.group, []):
                groups[t.group].append(t.version)
        for group, versions in groups.items():  # the storage version is preferred
            storage = [t.storage_version for t in self.types if t.group == group]
            versions.sort(key=lambda v: v != (storage[0] if storage else v))
        return groups


def _group_doc(group: str, versions: list[str]) -> JsonDict:
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }
