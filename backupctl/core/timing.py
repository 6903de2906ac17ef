"""The two callables that bounded waits take, so tests can pass fakes: a
monotonic clock (seconds, like ``time.monotonic``) and a sleep. The
controller's wall clock is another thing (:class:`backupctl.controller.runtime.Clock`)."""

from collections.abc import Callable

Monotonic = Callable[[], float]
Sleep = Callable[[float], None]
