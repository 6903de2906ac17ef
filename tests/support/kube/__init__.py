"""Kubernetes test substrate: an API emulator on loopback and a kubelet/Job-controller stand-in.

There is no real kube-apiserver or container runtime on the test machines, so controller
tests run the real kopf operator and real clients (``kubernetes``, ``kubectl``) against
:mod:`support.kube.api_server` (kmock 0.8 plus the fidelity fixes it lacks), while
:mod:`support.kube.kubelet` runs each Job's container command as a local process. Fixtures live
in :mod:`support.kube.fixtures`.

The API emulator, by concern (``api_server.KubeEmulator`` composes the parts):

* ``api_server``: the HTTP front and entry point: routing, JSON/Status/Table responses, watch
  streams, ``pods/log``; re-exports the names other modules import (``KubeEmulator``, ...);
* ``kmock_compat``: kmock's plumbing, DSL and request log; the only user of kmock internals;
* ``http_request``: request paths as kube-apiserver reads them, body decoding;
* ``resources``: resource types and their registry; ``discovery``: discovery documents;
* ``object_store``: objects, resourceVersions, indexes; ``watches``: watchers and replay log;
* ``object_api``: get/list/create/replace/patch rules; ``deletion``: DELETE, finalizers,
  propagation policies;
* ``admission``: normalising and the checks every write passes (add new checks here);
  ``rbac``: tokens -> users, RBAC authorization (``k8s_api.enforce_rbac()``) and
  OwnerReferencesPermissionEnforcement; ``pod_security``: PodSecurity admission;
  ``builtin_kinds``: defaults of Secret/Namespace/Pod/Job; ``schema``: CRD schema + CEL;
  ``patching``: merge/JSON/strategic patches; ``selectors``: label and field selectors;
* ``crds``: CRD validation, serving, cleanup; ``kube_controllers``: garbage collection,
  namespace and finalizer completion after writes; ``partition``: one client (by token)
  cut off from the server;
* ``printing``: server-side Table output; ``errors``: Status errors with kube's wording;
* ``emulator_thread``: serving from a background thread, ``write_kubeconfig``.

Clients and stand-ins: ``api_client`` (a small sync client, ``kubectl`` runner), ``kubelet``
(Jobs as local processes), ``statefulset_controller`` (Redis pods), ``operator_process`` and
``operator_example`` (running kopf operators); shared by both stand-ins: ``container_setup``
(env, volumes, paths), ``security_context`` (the effective user, groups, capabilities; the
image ``USER`` table), ``mount_namespace`` (bind mounts, read-only, ``setpriv``),
``scheduling`` (Nodes, the scheduler, Multi-Attach/FailedMount); ``workloads``: plain
Job/StatefulSet manifests for tests of the substrate itself.
"""
