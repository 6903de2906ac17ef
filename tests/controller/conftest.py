"""The controller end-to-end tests' shared fixtures (:mod:`support.controller_e2e`):
``api``, ``operator``, ``statefulsets`` and ``bucket``. A test module that defines a
fixture of the same name uses its own."""

from support.controller_e2e import api, bucket, operator, statefulsets

__all__ = ["api", "bucket", "operator", "statefulsets"]
