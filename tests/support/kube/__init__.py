"""Kubernetes test substrate: an API emulator on loopback and a kubelet/Job-controller stand-in.

There is no real kube-apiserver or container runtime on the test machines, so controller
tests run the real kopf operator and real clients (``kubernetes``, ``kubectl``) against
:mod:`support.kube.api_server` (kmock 0.8 plus the fidelity fixes it lacks), while
:mod:`support.kube.kubelet` runs each Job's container command as a local process. Fixtures live
in :mod:`support.kube.fixtures`.
"""
