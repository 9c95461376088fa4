"""Retention: finished jobs older than ``ECHOMIMIC_RETENTION_DAYS`` are deleted.

A job is *finished* when it is ``completed``, ``failed`` or ``cancelled``; its age is counted from
``finished_at``. Deleting a job removes its inputs and results from the storage first, then its
record (so an interrupted clean-up is finished by the next one). Stored files that belong to no
job record (left by an interrupted submission) are removed once they are as old as the limit.
Queued and running jobs are never touched.

:func:`cleanup` runs one pass (``echomimic cleanup`` runs it from the command line);
:class:`Cleaner` runs it periodically (every ``ECHOMIMIC_CLEANUP_INTERVAL`` seconds) in a
background thread of the API process when ``ECHOMIMIC_RETENTION_DAYS`` is above 0
(:func:`attach` hooks it into the app's lifespan).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .store import TERMINAL, JobRow, JobStore

if TYPE_CHECKING:  # pragma: no cover
    from .settings import Settings
    from .storage import Storage

log = logging.getLogger("echomimic.service.retention")

DAY = 86400.0


@dataclass
class CleanupReport:
    """What one pass deleted (or, with ``dry_run``, would delete)."""

    jobs: list[str] = field(default_factory=list)        # finished jobs removed with their files
    orphans: list[str] = field(default_factory=list)     # stored files without a job record
    errors: list[str] = field(default_factory=list)      # jobs whose files could not be removed

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": len(self.jobs), "orphans": len(self.orphans), "errors": len(self.errors)}


def cleanup(store: JobStore, storage: "Storage", *, older_than_days: float,
            now: float | None = None, dry_run: bool = False, limit: int = 1000) -> CleanupReport:
    """Delete the files and records of jobs finished more than ``older_than_days`` days ago.

    At most ``limit`` jobs are deleted in one pass (the next pass continues). A job whose files
    cannot be removed keeps its record and is listed in ``errors``.
    """
    if older_than_days <= 0:
        raise ValueError("older_than_days must be above 0")
    now = time.time() if now is None else now
    cutoff = now - older_than_days * DAY
    report = CleanupReport()
    with Session(store.engine) as s:
        old = list(s.scalars(select(JobRow.id)
                             .where(JobRow.status.in_(TERMINAL), JobRow.finished_at < cutoff)
                             .order_by(JobRow.finished_at).limit(int(limit))))
    for job_id in old:
        if dry_run:
            report.jobs.append(job_id)
            continue
        try:
            storage.delete_job(job_id)
        except Exception as exc:  # the store is unreachable: keep the record, retry next time
            log.warning("retention: cannot delete the files of job %s (%s)", job_id, exc)
            report.errors.append(job_id)
            continue
        with Session(store.engine) as s, s.begin():
            s.execute(delete(JobRow).where(JobRow.id == job_id, JobRow.status.in_(TERMINAL)))
        report.jobs.append(job_id)

    stale = [job_id for job_id, t in storage.iter_jobs() if t < cutoff]
    known: set[str] = set()
    with Session(store.engine) as s:
        for i in range(0, len(stale), 500):
            known.update(s.scalars(select(JobRow.id).where(JobRow.id.in_(stale[i:i + 500]))))
    for job_id in stale:
        if job_id in known or job_id in report.jobs:
            continue
        if not dry_run:
            storage.delete_job(job_id)
        report.orphans.append(job_id)
    if report.jobs or report.orphans:
        log.info("retention: %s %d finished jobs and %d orphaned file sets older than %g days",
                 "would delete" if dry_run else "deleted", len(report.jobs), len(report.orphans),
                 older_than_days)
    return report


class Cleaner:
    """Runs :func:`cleanup` every ``interval`` seconds in a daemon thread."""

    def __init__(self, store: JobStore, storage: "Storage", *, older_than_days: float,
                 interval: float = 3600.0):
        self.store, self.storage = store, storage
        self.older_than_days, self.interval = float(older_than_days), float(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: CleanupReport | None = None

    def run_once(self) -> CleanupReport | None:
        """One pass; a failure is logged, not raised (the next pass tries again)."""
        try:
            self.last = cleanup(self.store, self.storage, older_than_days=self.older_than_days)
        except Exception:
            log.exception("retention: clean-up failed")
            return None
        return self.last

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="echomimic-retention")
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def attach(app: Any, store: JobStore, storage: "Storage", settings: "Settings") -> None:
    """Run a :class:`Cleaner` while ``app`` runs (from its lifespan), when retention is on.

    The app's own lifespan, if it has one, still runs inside.
    """
    if settings.retention_days <= 0:
        return
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Any):
        cleaner = Cleaner(store, storage, older_than_days=settings.retention_days,
                          interval=settings.cleanup_interval)
        application.state.cleaner = cleaner
        cleaner.start()
        try:
            async with inner(application) as state:
                yield state
        finally:
            cleaner.stop()

    app.router.lifespan_context = lifespan
