"""Per-key limits on submissions, checked before a job is queued.

* **Rate**: at most ``ECHOMIMIC_RATE_LIMIT`` submissions per minute per API key (a sliding
  window); over it, ``429 rate_limited`` with a ``Retry-After`` header (seconds). The window is
  kept by each API process.
* **Concurrency**: at most ``ECHOMIMIC_MAX_ACTIVE_JOBS`` queued + running jobs per API key,
  counted in the job store (so every API process sees the same count); over it,
  ``429 too_many_jobs``.

``0`` turns either limit off. A retried submission with an ``Idempotency-Key`` already used is
answered before the limits are checked, so it never counts.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from ..errors import EchomimicError
from .store import JobStore

WINDOW_SECONDS = 60.0


class RateLimited(EchomimicError):
    """Too many submissions in the last minute for this API key."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}


class TooManyJobs(EchomimicError):
    """This API key already has as many queued and running jobs as it may."""

    code = "too_many_jobs"
    http_status = 429


class SubmissionLimits:
    """Checks the rate and concurrency limits of one API key before a job is queued."""

    def __init__(self, store: JobStore, *, per_minute: int, max_active: int,
                 clock=time.monotonic):
        self.store, self.per_minute, self.max_active = store, int(per_minute), int(max_active)
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, owner: str) -> None:
        """Count one submission of ``owner``; raise :class:`RateLimited` or
        :class:`TooManyJobs` when it is over a limit (a refused submission is not counted)."""
        if self.per_minute > 0:
            now = self._clock()
            with self._lock:
                window = self._windows.setdefault(owner, deque())
                while window and window[0] <= now - WINDOW_SECONDS:
                    window.popleft()
                if len(window) >= self.per_minute:
                    wait = math.ceil(window[0] + WINDOW_SECONDS - now)
                    raise RateLimited(f"more than {self.per_minute} submissions in a minute; "
                                      f"retry in {max(1, wait)} s", retry_after=wait)
                window.append(now)
                self._forget_idle(now)
        if self.max_active > 0:
            active = self.store.count_active(owner)
            if active >= self.max_active:
                self._uncount(owner)
                raise TooManyJobs(f"{active} jobs of this key are queued or running, the most "
                                  f"allowed is {self.max_active}; wait for one to finish")

    def _uncount(self, owner: str) -> None:
        if self.per_minute > 0:
            with self._lock:
                window = self._windows.get(owner)
                if window:
                    window.pop()

    def _forget_idle(self, now: float) -> None:
        """Drop the windows of keys idle for a minute (bounded memory)."""
        if len(self._windows) < 1024:
            return
        for key in [k for k, w in self._windows.items() if not w or w[-1] <= now - WINDOW_SECONDS]:
            del self._windows[key]
