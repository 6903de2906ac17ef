"""Who is asking, and may they: bearer tokens, RBAC and OwnerReferencesPermissionEnforcement.

Why: a controller that works as cluster-admin can still be refused on a cluster by its own
ClusterRole (a missing verb, a missing ``/finalizers`` rule under OpenShift's
``OwnerReferencesPermissionEnforcement``). The emulator maps bearer tokens to users
(:class:`Authenticator`: the kubeconfig's dummy token and requests without one are a
cluster-admin, so tests that do not ask for more are unaffected; :meth:`Authenticator.token_for`
gives a ServiceAccount's token) and, once a test turns :attr:`Authenticator.enforce` on,
authorizes every resource request of a non-admin user against the Roles, ClusterRoles,
RoleBindings and ClusterRoleBindings stored in the emulator (:func:`allowed`: verbs, resources
with subresources, resourceNames, apiGroups, ``*``), answering 403 with kube-apiserver's
message. :func:`owner_references_check` is the admission plugin: setting an ownerReference
needs ``delete`` on the object, and ``blockOwnerDeletion: true`` needs ``update`` on the
owner's ``<resource>/finalizers``. Not emulated: aggregated ClusterRoles, non-resource URLs,
impersonation, ``escalate``/``bind`` checks when writing RBAC objects.
"""

from __future__ import annotations

import contextvars
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .admission import Write
from .errors import ApiError, JsonDict
from .object_store import ObjectStore
from .resources import ResourceRegistry

ADMIN_TOKEN = "emulator-token"  # what write_kubeconfig puts in the default kubeconfig
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def admin(self) -> bool:
        return "system:masters" in self.groups


ADMIN = User("system:admin", ("system:masters", "system:authenticated"))


@dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


current_user: contextvars.ContextVar[User] = contextvars.ContextVar("current_user", default=ADMIN)


def _subject_matches(subject: JsonDict, user: User) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace')}:{name}"
    return False


def _rule_allows(rule: JsonDict, attrs: Attributes) -> bool:
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    resources = rule.get("resources") or []
    sub = attrs.subresource
    wanted = {attrs.resource_path, "*"} | ({f"*/{sub}"} if sub else set())
    if not wanted & set(resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or (attrs.name is not None and attrs.name in names)


def allowed(
    user: User,
    attrs: Attributes,
    roles: Iterable[JsonDict],
    cluster_roles: Iterable[JsonDict],
    bindings: Iterable[JsonDict],
    cluster_bindings: Iterable[JsonDict],
) -> bool:
    """RBAC's decision for ``attrs`` by ``user`` from the stored objects (pure)."""
    if user.admin:
        return True
    by_name = {r["metadata"]["name"]: r for r in cluster_roles}
    ns_roles = {(r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in roles}
    rule_sets: list[list[JsonDict]] = []
    for b in cluster_bindings:
        if any(_subject_matches(s, user) for s in b.get("subjects") or []):
            role = by_name.get((b.get("roleRef") or {}).get("name"))
            rule_sets.append((role or {}).get("rules") or [])
    if attrs.namespace is not None:
        for b in bindings:
            if b["metadata"].get("namespace") != attrs.namespace:
                continue
            if not any(_subject_matches(s, user) for s in b.get("subjects") or []):
                continue
            ref = b.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                role = by_name.get(ref.get("name"))
            else:
                role = ns_roles.get((attrs.namespace, ref.get("name")))
            rule_sets.append((role or {}).get("rules") or [])
    return any(_rule_allows(rule, attrs) for rules in rule_sets for rule in rules)


def denial(user: User, attrs: Attributes) -> str:
    """``User "x" cannot create resource "jobs" in API group "batch" in the namespace "ns"``."""
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{user.name}" cannot {attrs.verb} resource "{attrs.resource_path}" '
        f'in API group "{attrs.group}" {where}'
    )


def forbidden(user: User, attrs: Attributes) -> ApiError:
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    named = f' "{attrs.name}"' if attrs.name else ""
    return ApiError(
        403,
        "Forbidden",
        f"{qualified}{named} is forbidden: {denial(user, attrs)}",
        {"name": attrs.name or "", "group": attrs.group, "kind": attrs.resource},
    )


@dataclass
class Authenticator:
    """Tokens -> users, and the RBAC check of the emulator (see the module docstring)."""

    store: ObjectStore
    types: ResourceRegistry
    enforce: bool = False  # a test turns RBAC (and the ownerReference plugin) on
    tokens: dict[str, User] = field(default_factory=dict)

    def user(self, authorization: str | None) -> User:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or token == ADMIN_TOKEN:
            return ADMIN
        found = self.tokens.get(token)
        if found is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return found

    def token_for(self, namespace: str, service_account: str) -> str:
        """A bearer token authenticating as ``system:serviceaccount:<ns>:<sa>``."""
        token = f"sa-{namespace}-{service_account}-{secrets.token_hex(8)}"
        self.tokens[token] = User(
            f"system:serviceaccount:{namespace}:{service_account}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
             "system:authenticated"),
        )  # fmt: skip
        return token

    def token_for_user(self, name: str, groups: tuple[str, ...] = ()) -> str:
        token = f"user-{name}-{secrets.token_hex(8)}"
        self.tokens[token] = User(name, (*groups, "system:authenticated"))
        return token

    def _objects(self, plural: str) -> list[JsonDict]:
        rt = self.types.get(RBAC_GROUP, "v1", plural)
        return list(self.store.iter_objects(rt, None))

    def can(self, user: User, attrs: Attributes) -> bool:
        if not self.enforce or user.admin:
            return True
        return allowed(
            user,
            attrs,
            self._objects("roles"),
            self._objects("clusterroles"),
            self._objects("rolebindings"),
            self._objects("clusterrolebindings"),
        )

    def authorize(self, user: User, attrs: Attributes) -> None:
        if not self.can(user, attrs):
            raise forbidden(user, attrs)


def owner_references_check(auth: Authenticator) -> Callable[[Write], list[str]]:
    """OwnerReferencesPermissionEnforcement as an admission check on every write."""

    def check(write: Write) -> list[str]:
        user = current_user.get()
        if not auth.enforce or user.admin:
            return []
        refs = write.obj["metadata"].get("ownerReferences") or []
        old_refs = ((write.old or {}).get("metadata") or {}).get("ownerReferences") or []
        if refs == old_refs:
            return []
        ns = write.obj["metadata"].get("namespace") if write.rt.namespaced else None
        name = write.obj["metadata"]["name"]
        qualified = write.rt.qualified_resource
        delete = Attributes("delete", write.rt.group, write.rt.plural, None, ns, name)
        if not auth.can(user, delete):
            raise ApiError(
                403,
                "Forbidden",
                f'{qualified} "{name}" is forbidden: cannot set an ownerRef on a resource you '
                f"can't delete: {denial(user, delete)}, <nil>",
                {"name": name, "group": write.rt.group, "kind": write.rt.plural},
            )
        for ref in refs:
            if not ref.get("blockOwnerDeletion") or ref in old_refs:
                continue
            owner = auth.types.find(str(ref.get("apiVersion")), str(ref.get("kind")))
            if owner is None:
                continue
            finalizers = Attributes(
                "update", owner.group, owner.plural, "finalizers",
                ns if owner.namespaced else None, ref.get("name"),
            )  # fmt: skip
            if not auth.can(user, finalizers):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{qualified} "{name}" is forbidden: cannot set blockOwnerDeletion if an '
                    "ownerReference refers to a resource you can't set finalizers on: "
                    f"{denial(user, finalizers)}, <nil>",
                    {"name": name, "group": write.rt.group, "kind": write.rt.plural},
                )
        return []

    return check


def verb_of(method: str, named: bool, watch: bool) -> str:
    if watch:
        return "watch"
    if method == "GET":
        return "get" if named else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())
